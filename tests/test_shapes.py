"""The shape doctor: infer(), explain() and diagnose(), all by dry runs on meta.

Every mistake in the doctor's list is one test with a user module written the way a user
writes it; each asserts the innermost module's path and the numbers of the fix.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import cnnlstm
from cnnlstm import Diagnosis, Explanation, Finding, ShapeError, diagnose, explain, infer

SETTINGS = settings(max_examples=25, deadline=None)


def _small_model(**kw) -> cnnlstm.CNNLSTM:
    opts = {
        "input_shape": (8, 3, 32, 32),
        "hidden_size": 16,
        "num_classes": 5,
        "backbone_options": {"channels": (8, 16)},
    }
    opts.update(kw)
    return cnnlstm.CNNLSTM(**opts)


def _no_hooks(module: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())


# ----------------------------------------------------------------------------- user modules with the classic mistakes


class FramesIntoLSTM(nn.Module):
    """Folds time into the batch for the CNN, then hands the clip's feature maps straight to the LSTM."""

    def __init__(self):
        super().__init__()
        self.cnn = nn.Conv2d(3, 64, 3, padding=1)
        self.lstm = nn.LSTM(512, 128, batch_first=True)

    def forward(self, x):  # (N, T, 3, H, W)
        n, t = x.shape[:2]
        maps = self.cnn(x.flatten(0, 1)).unflatten(0, (n, t))  # (N, T, 64, H, W)
        out, _ = self.lstm(maps)
        return out


class ImageMapsIntoLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.cnn = nn.Conv2d(3, 64, 3, padding=1)
        self.lstm = nn.LSTM(512, 128, batch_first=True)

    def forward(self, x):  # (N, 3, H, W)
        out, _ = self.lstm(self.cnn(x))
        return out


class WrongInputSize(nn.Module):
    """Pools the frames correctly (F = 64) but builds the LSTM for 128 features."""

    def __init__(self):
        super().__init__()
        self.cnn = nn.Conv2d(3, 64, 3, padding=1)
        self.lstm = nn.LSTM(128, 32, batch_first=True)

    def forward(self, x):
        n, t = x.shape[:2]
        feats = self.cnn(x.flatten(0, 1)).mean(dim=(-2, -1)).unflatten(0, (n, t))  # (N, T, 64)
        out, _ = self.lstm(feats)
        return out


class ClipIntoConv2d(nn.Module):
    def __init__(self):
        super().__init__()
        self.cnn = nn.Conv2d(3, 16, 3)

    def forward(self, x):
        return self.cnn(x)


class SeriesIntoConv1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(6, 16, 3)
        self.lstm = nn.LSTM(16, 32, batch_first=True)

    def forward(self, x):  # (N, T, F) given as is
        y = self.conv(x)
        out, _ = self.lstm(y.transpose(1, 2))
        return out


class TupleIntoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(10, 256, batch_first=True)
        self.fc = nn.Linear(256, 5)

    def forward(self, x):
        return self.fc(self.lstm(x))


class FlatSequenceIntoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(10, 256, batch_first=True)
        self.fc = nn.Linear(256, 5)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out.flatten(1))  # (N, T*D)


class PerStepLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(10, 256, batch_first=True)
        self.fc = nn.Linear(256, 5)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out)  # (N, T, 5): one output per step


class BidirectionalHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(10, 256, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(256, 5)  # should be 512

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])


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


# ----------------------------------------------------------------------------- diagnose: the mistakes


def test_clip_maps_into_lstm_names_lstm_and_bridges_with_their_F():
    result = diagnose(FramesIntoLSTM(), (8, 16, 3, 7, 7))
    assert isinstance(result, Diagnosis)
    assert result.ok is False
    err = result.error
    assert isinstance(err, Finding)
    assert err.path == "lstm"
    assert err.module == "LSTM"
    assert tuple(err.got) == (8, 16, 64, 7, 7)
    text = str(err)
    assert "LSTM 'lstm'" in text
    assert "F=512" in text  # what it wants
    assert 'bridge="gap" gives F=64' in text
    assert 'bridge="flatten" gives F=3136' in text
    assert 'bridge="grid" gives F=256' in text
    assert result.output is None


def test_image_maps_into_lstm_suggests_spatial_with_sequence_shape():
    result = diagnose(ImageMapsIntoLSTM(), (8, 3, 7, 7))
    assert not result.ok
    assert result.error.path == "lstm"
    text = str(result.error)
    assert 'bridge="spatial"' in text
    assert "(8, 49, 64)" in text
    assert "F=64" in text


def test_lstm_input_size_differs_from_incoming_F():
    result = diagnose(WrongInputSize(), (4, 5, 3, 16, 16))
    assert not result.ok
    err = result.error
    assert err.path == "lstm"
    assert tuple(err.got) == (4, 5, 64)
    assert "F=64 but input_size=128" in str(err)
    assert "input_size=64" in err.fix


def test_features_on_axis_1_into_lstm_suggests_transpose():
    result = diagnose(nn.LSTM(300, 64, batch_first=True), (8, 300, 20))
    assert not result.ok
    assert "x.transpose(1, 2)" in result.error.fix
    assert "(8, 20, 300)" in result.error.fix
    assert "input_size=20" in result.error.fix


def test_five_d_clip_into_conv2d_says_time_distributed():
    result = diagnose(ClipIntoConv2d(), (8, 16, 3, 32, 32))
    assert not result.ok
    err = result.error
    assert err.path == "cnn"
    assert err.module == "Conv2d"
    assert "TimeDistributed" in str(err)
    assert "(N*T, C, H, W)" in str(err)
    assert "C=3" in err.wants


def test_channels_last_clip_into_conv2d_also_gives_permutation():
    result = diagnose(ClipIntoConv2d(), (8, 16, 32, 32, 3))
    assert not result.ok
    text = str(result.error)
    assert "TimeDistributed" in text
    assert "x.permute(0, 1, 4, 2, 3)" in text
    assert "layout='NTHWC'" in text


def test_channels_last_into_conv2d_gives_exact_permutation():
    result = diagnose(ClipIntoConv2d(), (8, 32, 24, 3))
    assert not result.ok
    err = result.error
    assert err.path == "cnn"
    assert "x.permute(0, 3, 1, 2)" in err.fix
    assert "(8, 3, 32, 24)" in err.fix
    assert "C=3 on axis 3" in err.problem


def test_wrong_channel_count_into_conv2d():
    result = diagnose(ClipIntoConv2d(), (8, 5, 32, 32))
    assert not result.ok
    assert result.error.path == "cnn"
    assert "in_channels=5" in result.error.fix


def test_series_into_conv1d_gives_transpose():
    result = diagnose(SeriesIntoConv1d(), (8, 100, 6))
    assert not result.ok
    err = result.error
    assert err.path == "conv"
    assert err.module == "Conv1d"
    assert "x.transpose(1, 2)" in err.fix
    assert "(8, 6, 100)" in err.fix


def test_rnn_tuple_into_linear():
    result = diagnose(TupleIntoLinear(), (8, 20, 10))
    assert not result.ok
    err = result.error
    assert err.path == "fc"
    assert err.module == "Linear"
    assert "output tuple" in err.problem
    assert "out, _ = rnn(x)" in err.fix
    assert "out[:, -1]" in err.fix


def test_flattened_rnn_sequence_into_linear():
    result = diagnose(FlatSequenceIntoLinear(), (8, 20, 10))
    assert not result.ok
    err = result.error
    assert err.path == "fc"
    assert tuple(err.got) == (8, 5120)
    assert "out[:, -1]" in err.fix
    assert "(8, 256)" in err.fix


def test_linear_on_every_step_of_rnn_output_is_a_warning():
    result = diagnose(PerStepLinear(), (8, 20, 10))
    assert result.ok
    assert result.output == torch.Size([8, 20, 5])
    [w] = result.warnings
    assert w.path == "fc"
    assert "every step" in w.problem
    assert "out[:, -1]" in w.fix


def test_linear_after_bidirectional_rnn_sized_for_D():
    result = diagnose(BidirectionalHead(), (8, 20, 10))
    assert not result.ok
    err = result.error
    assert err.path == "fc"
    assert "2*D=512" in err.problem
    assert "in_features=512" in err.fix


# ----------------------------------------------------------------------------- diagnose: the silent traps


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


def test_lengths_to_a_forward_without_lengths_is_flagged():
    result = diagnose(PerStepLinear(), (2, 20, 10), lengths=[20, 10])
    assert any("takes no lengths" in w.problem for w in result.warnings)


@pytest.mark.parametrize("head", ["last", "mean", "attention", "frames"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_cnnlstm_with_lengths_gives_no_warnings(head, bidirectional):
    model = _small_model(input_shape=(6, 3, 16, 16), head=head, bidirectional=bidirectional)
    result = diagnose(model, (3, 6, 3, 16, 16), lengths=[6, 4, 2])
    assert result.ok
    assert result.findings == []
    want = (3, 6, 5) if head == "frames" else (3, 5)
    assert tuple(result.output) == want


def test_cnnlstm_series_with_lengths_gives_no_warnings():
    model = cnnlstm.CNNLSTM(input_shape=(None, 4), layout="NTF", hidden_size=8, backbone_options={"channels": (8,)})
    result = diagnose(model, (3, 6, 4), lengths=[6, 4, 2])
    assert result.ok
    assert result.findings == []


# ----------------------------------------------------------------------------- diagnose: the result object


def test_diagnose_ok_result():
    result = diagnose(nn.LSTM(10, 16, batch_first=True), (4, 7, 10))
    assert result.ok
    assert result.findings == []
    assert result.warnings == []
    assert result.error is None
    assert str(result).startswith("ok: output")


def test_diagnose_never_raises_on_an_unknown_failure():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(7, 3))

        def forward(self, x):
            return x @ self.w  # (N, 5) @ (7, 3)

    result = diagnose(Broken(), (2, 5))
    assert not result.ok
    assert result.error.known is False
    assert result.error.module == "Broken"
    assert str(result).startswith("error:")


def test_diagnose_leaves_the_module_untouched():
    model = FramesIntoLSTM()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    diagnose(model, (2, 4, 3, 7, 7))
    assert _no_hooks(model)
    for k, v in model.state_dict().items():
        assert v.device.type == "cpu"
        assert torch.equal(v, before[k])


def test_diagnose_str_lists_warnings_after_runs_line():
    text = str(diagnose(UnbatchedLSTM(), (8, 10)))
    assert text.startswith("runs: output (8, 5), with 1 warning(s)")
    assert "warning: LSTM 'lstm'" in text


# ----------------------------------------------------------------------------- infer


def test_infer_huge_input_on_default_model():
    assert infer(cnnlstm.CNNLSTM(), (1024, 64, 3, 1024, 1024)) == torch.Size([1024, 10])


def test_infer_conv2d_doc_example():
    assert infer(nn.Conv2d(3, 8, 3, stride=2), (1024, 3, 1024, 1024)) == torch.Size([1024, 8, 511, 511])


def test_infer_lstm_gives_nested_tuple():
    out, (h, c) = infer(nn.LSTM(10, 16, batch_first=True, num_layers=2), (4, 7, 10))
    assert out == torch.Size([4, 7, 16])
    assert h == torch.Size([2, 4, 16])
    assert c == torch.Size([2, 4, 16])


def test_infer_none_time_flows_to_output():
    model = _small_model(input_shape=(None, 3, 32, 32), head="frames")
    assert tuple(infer(model, (2, None, 3, 32, 32))) == (2, None, 5)
    # the clip head pools time away: no None left
    assert infer(_small_model(input_shape=(None, 3, 32, 32)), (2, None, 3, 32, 32)) == torch.Size([2, 5])
    td = cnnlstm.TimeDistributed(cnnlstm.SmallCNN(3, channels=(8, 16)))
    assert tuple(infer(td, (2, None, 3, 32, 32))) == (2, None, 16, 8, 8)
    out, (h, _c) = infer(nn.LSTM(10, 16, batch_first=True), (4, None, 10))
    assert tuple(out) == (4, None, 16)
    assert h == torch.Size([1, 4, 16])


def test_infer_none_time_flows_into_dict_outputs():
    class Dict(nn.Module):
        def forward(self, x):
            return {"steps": x * 2, "pooled": x.sum(1)}

    out = infer(Dict(), (2, None, 4))
    assert tuple(out["steps"]) == (2, None, 4)
    assert tuple(out["pooled"]) == (2, 4)


def test_infer_leaves_the_module_untouched():
    model = _small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    infer(model, (2, 8, 3, 32, 32))
    assert _no_hooks(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("bad", [(2, 0, 3, 32, 32), (2, -1, 3, 32, 32), (2, 8.0, 3, 32, 32), 5, "abc"])
def test_infer_bad_input_shape_raises_shape_error(bad):
    with pytest.raises(ShapeError, match="infer"):
        infer(_small_model(), bad)


def test_infer_wrong_channels_raises_diagnosed_shape_error():
    with pytest.raises(ShapeError, match=r"in_channels=5"):
        infer(cnnlstm.SmallCNN(3, channels=(8,)), (2, 5, 16, 16))


def test_infer_wrong_rank_on_model_raises_shape_error():
    with pytest.raises(ShapeError, match=r"x\.unsqueeze\(0\)"):
        infer(_small_model(), (8, 3, 32, 32))


def test_infer_channels_last_on_model_names_layout():
    with pytest.raises(ShapeError, match="layout='NTHWC'"):
        infer(_small_model(), (2, 8, 32, 32, 3))


# ----------------------------------------------------------------------------- explain


def test_explain_rows_and_table():
    model = _small_model()
    table = explain(model, (2, 8, 3, 32, 32))
    assert isinstance(table, Explanation)
    root = table.rows[0]
    assert root.path == ""
    assert root.type == "CNNLSTM"
    assert tuple(root.input) == (2, 8, 3, 32, 32)
    assert tuple(root.output) == (2, 5)
    assert root.params == sum(p.numel() for p in model.parameters())
    assert table.total_params == root.params
    assert tuple(table.output) == (2, 5)
    for r in table.rows:
        assert {"path", "type", "input", "output", "params"} <= set(vars(r))
    by_path = {r.path: r for r in table.rows}
    assert tuple(by_path["bridge"].input) == (2, 8, 16, 8, 8)
    assert tuple(by_path["bridge"].output) == (2, 8, 16)
    assert by_path["bridge"].type == "GlobalAvgPool"
    assert tuple(by_path["backbone.module.block1.conv"].input) == (16, 3, 32, 32)
    assert by_path["backbone.module.block1.conv"].params == 3 * 8 * 9
    assert by_path["head.fc"].params == 16 * 5 + 5
    text = str(table)
    for column in ("module", "type", "input", "output", "params"):
        assert column in text.splitlines()[0]
    assert "(model)" in text
    assert "(2, 8, 16, 8, 8)" in text
    assert _no_hooks(model)


def test_explain_counts_repeated_calls():
    relu = nn.ReLU()
    net = nn.Sequential(nn.Linear(4, 8), relu, nn.Linear(8, 8), relu)
    table = explain(net, (2, 4))
    relus = [r for r in table.rows if r.type == "ReLU"]
    assert len(relus) == 1
    assert relus[0].calls == 2
    assert "ReLU x2" in str(table)
    assert table.rows[0].params == 4 * 8 + 8 + 8 * 8 + 8


def test_explain_wrong_shape_raises_and_removes_hooks():
    model = _small_model()
    with pytest.raises(ShapeError, match="C=3"):
        explain(model, (2, 8, 5, 32, 32))
    assert _no_hooks(model)


# ----------------------------------------------------------------------------- fuzz: wrong shapes raise ShapeError only


@st.composite
def wrong_clip_shapes(draw):
    """Shapes that are not (N, T, 3, H, W): a wrong rank, or rank 5 with a wrong channel count."""
    if draw(st.booleans()):
        rank = draw(st.sampled_from([1, 2, 3, 4, 6, 7]))
        return tuple(draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank)))
    n, t = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    c = draw(st.integers(1, 8).filter(lambda c: c != 3))
    h, w = draw(st.integers(4, 16)), draw(st.integers(4, 16))
    return (n, t, c, h, w)


_FUZZ_MODEL = None


def _fuzz_model() -> cnnlstm.CNNLSTM:
    global _FUZZ_MODEL
    if _FUZZ_MODEL is None:
        _FUZZ_MODEL = _small_model(input_shape=(None, 3, 16, 16), hidden_size=8)
    return _FUZZ_MODEL


@SETTINGS
@given(wrong_clip_shapes())
def test_fuzz_infer_wrong_shapes_raise_shape_error(shape):
    with pytest.raises(ShapeError):
        infer(_fuzz_model(), shape)


@SETTINGS
@given(wrong_clip_shapes())
def test_fuzz_explain_wrong_shapes_raise_shape_error(shape):
    with pytest.raises(ShapeError):
        explain(_fuzz_model(), shape)


@SETTINGS
@given(wrong_clip_shapes())
def test_fuzz_diagnose_never_raises_on_wrong_shapes(shape):
    result = diagnose(_fuzz_model(), shape)
    assert not result.ok
    assert str(result.error)


@SETTINGS
@given(st.lists(st.integers(1, 6), min_size=1, max_size=6).map(tuple))
def test_fuzz_infer_on_a_backbone_raises_only_shape_error(shape):
    cnn = cnnlstm.SmallCNN(3, channels=(4,))
    try:
        out = infer(cnn, shape)
    except ShapeError:
        return
    # it ran: then it was a valid batch of 3-channel images
    assert len(shape) == 4
    assert shape[1] == 3
    assert tuple(out) == (shape[0], 4, shape[2] // 2, shape[3] // 2)
