"""The rule table: rules keyed by module type, reading attributes of cnnlstm's layers instead of importing them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlstm import Temporal, diagnose
from cnnlstm.layers.bridges import BRIDGES, GridPool
from cnnlstm.shapes import RULES
from cnnlstm.shapes.doctor import rule_for
from cnnlstm.shapes.findings import Site
from cnnlstm.shapes.rules import Context, Stop, check_conv1d, check_conv2d, check_linear, check_rnn


class ConvSub(nn.Conv2d):
    pass


class LSTMSub(nn.LSTM):
    pass


def test_rules_are_keyed_by_module_type():
    assert {nn.RNNBase: check_rnn, nn.Conv2d: check_conv2d, nn.Conv1d: check_conv1d, nn.Linear: check_linear} == RULES


@pytest.mark.parametrize(
    ("module", "rule"),
    [
        (nn.LSTM(3, 4), check_rnn),
        (nn.GRU(3, 4), check_rnn),
        (nn.RNN(3, 4), check_rnn),
        (LSTMSub(3, 4), check_rnn),
        (nn.Conv2d(3, 4, 1), check_conv2d),
        (ConvSub(3, 4, 1), check_conv2d),
        (nn.Conv1d(3, 4, 1), check_conv1d),
        (nn.Linear(3, 4), check_linear),
        (nn.ReLU(), None),
        (nn.Conv3d(3, 4, 1), None),
    ],
)
def test_a_module_gets_the_rule_of_the_first_class_in_its_mro(module, rule):
    assert rule_for(module) is rule


def test_a_subclass_is_checked_by_its_base_class_rule():
    err = diagnose(LSTMSub(512, 8, batch_first=True), (2, 3, 64, 7, 7)).error
    assert err.known
    assert str(err).startswith("LSTM wants (N, T, F=512) with batch_first=True, got (2, 3, 64, 7, 7): a clip")


def test_a_rule_is_a_small_function_of_context_path_module_input():
    ctx = Context(batch=2, lengths=None, names={}, modules={})
    with pytest.raises(Stop) as stop:
        check_conv2d(ctx, "cnn", nn.Conv2d(3, 8, 3), torch.empty(2, 32, 24, 3, device="meta"))
    assert stop.value.finding == Site("cnn", "Conv2d", (2, 32, 24, 3), "(N, C=3, H, W)").finding(
        "channels last (N, H, W, C) with C=3 on axis 3",
        "Permute to (N, C, H, W): x.permute(0, 3, 1, 2) gives (2, 3, 32, 24) (or layout='NHWC'/'NTHWC' in CNNLSTM).",
    )
    check_conv2d(ctx, "cnn", nn.Conv2d(3, 8, 3), torch.empty(2, 3, 24, 24, device="meta"))  # fine: no finding
    assert ctx.findings == []


# ----------------------------------------------------------------------------- attributes instead of imports


class Packs(nn.Module):
    """A user's own wrapper that declares, as cnnlstm.Temporal does, that it keeps padded steps out."""

    takes_lengths = True

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(10, 32, batch_first=True)

    def forward(self, x, lengths=None):
        return self.lstm(x)[0]


class Unmarked(Packs):
    takes_lengths = None  # declares nothing: the doctor reads its forward's signature


def test_a_parent_that_declares_takes_lengths_is_trusted_to_pack():
    assert diagnose(Packs(), (3, 6, 10), lengths=[6, 4, 2]).findings == []


def test_a_parent_without_the_attribute_is_warned_about_the_padding():
    [w] = diagnose(Unmarked(), (3, 6, 10), lengths=[6, 4, 2]).warnings
    assert w.path == "lstm"
    assert "2 of the sequences are padded (lengths [6, 4, 2] < T=6) but it runs over the padding" in w.problem


class FrameLabels(nn.Module):
    """A user's head that declares, as cnnlstm's frames head does, one output per step on purpose."""

    per_step = True

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32, 5)

    def forward(self, states):
        return self.fc(states)


class WithFrameLabels(nn.Module):
    def __init__(self, head: nn.Module):
        super().__init__()
        self.lstm = nn.LSTM(10, 32, batch_first=True)
        self.head = head

    def forward(self, x):
        return self.head(self.lstm(x)[0])


def test_a_per_step_parent_silences_the_every_step_warning():
    assert diagnose(WithFrameLabels(FrameLabels()), (2, 6, 10)).findings == []
    unmarked = FrameLabels()
    unmarked.per_step = False
    [w] = diagnose(WithFrameLabels(unmarked), (2, 6, 10)).warnings
    assert w.path == "head.fc"
    assert w.problem == "it is applied to every step of the RNN's output, so the model returns one output per step"


# ----------------------------------------------------------------------------- the silent traps, as warnings


class UnbatchedLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(10, 32, batch_first=True)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):  # (N, F): meant as N vectors
        out, _ = self.lstm(x)
        return self.fc(out)


class SeqFirstLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(10, 32)  # batch_first=False, given (N, T, F)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out[-1])


class LastStepHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32, 5)

    def forward(self, out):
        return self.fc(out[:, -1])  # the last *padded* step


class PaddedLastStep(nn.Module):
    """Takes lengths but ignores them: runs the LSTM over the padding and reads out[:, -1]."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(10, 32, batch_first=True)
        self.head = LastStepHead()

    def forward(self, x, lengths=None):
        out, _ = self.lstm(x)
        return self.head(out)


def test_two_d_tensor_into_lstm_is_flagged_as_unbatched():
    result = diagnose(UnbatchedLSTM(), (8, 10))
    assert result.ok  # PyTorch runs it
    assert result.error is None
    [w] = result.warnings
    assert w.severity == "warning"
    assert w.path == "lstm"
    assert "ONE unbatched sequence of 8 steps" in w.problem
    assert "x.unsqueeze(1)" in w.fix
    assert "(8, 1, 10)" in w.fix


def test_batch_first_false_given_batch_first_tensor():
    result = diagnose(SeqFirstLSTM(), (8, 20, 10))
    assert result.ok
    [w] = result.warnings
    assert w.path == "lstm"
    assert "batch_first=False" in w.problem
    assert "batch_first=True" in w.fix
    assert "x.transpose(0, 1) = (20, 8, 10)" in w.fix


def test_batch_first_true_gives_no_warning():
    assert diagnose(nn.LSTM(10, 32, batch_first=True), (8, 20, 10)).findings == []


def test_head_reading_last_padded_step_is_flagged():
    result = diagnose(PaddedLastStep(), (4, 20, 10), lengths=[20, 15, 10, 5])
    assert result.ok
    assert result.output == torch.Size([4, 5])
    reads = [w for w in result.warnings if "padding" in w.problem and "reads step" in w.problem]
    assert len(reads) == 1
    read = reads[0]
    assert read.path == "head"
    assert read.module == "LastStepHead"
    assert "out[torch.arange(N), lengths - 1]" in read.fix
    # and the LSTM itself runs over the padding
    over = [w for w in result.warnings if w.path == "lstm"]
    assert over and "pack_padded_sequence" in over[0].fix
    assert "3 of the sequences are padded" in over[0].problem


def test_padded_read_not_flagged_when_nothing_is_padded():
    result = diagnose(PaddedLastStep(), (2, 20, 10), lengths=[20, 20])
    assert result.ok
    assert result.warnings == []


def test_diagnose_str_lists_warnings_after_runs_line():
    text = str(diagnose(UnbatchedLSTM(), (8, 10)))
    assert text.startswith("runs: output (8, 5), with 1 warning(s)")
    assert "warning: LSTM 'lstm'" in text


# ----------------------------------------------------------------------------- the bridges named in a fix


class Grid3(GridPool):
    def __init__(self, k: int = 3):
        super().__init__(k)


def test_clip_maps_fix_asks_the_registered_grid_for_its_F(monkeypatch):
    monkeypatch.setitem(BRIDGES._table, "grid", Grid3)  # a grid whose default is k=3: F = C*9
    err = diagnose(nn.LSTM(576, 8, batch_first=True), (2, 3, 64, 7, 7)).error
    assert err.fix == (
        'Put a bridge in front: bridge="gap" gives F=64, bridge="grid" gives F=576, bridge="flatten" gives F=3136, '
        'bridge="attention" gives F=64 (bridge="grid" fits input_size=576).'
    )
    with pytest.raises(ValueError) as info:
        Temporal(576, 8)(torch.zeros(2, 3, 64, 7, 7))
    assert err.fix in str(info.value)  # the layer's own error says the same
