"""diagnose(): the doctor's findings on user modules written the way users write them.

Every mistake in the doctor's list is one test with a user module written the way a user
writes it; each asserts the innermost module's path and the numbers of the fix.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnlstm
from cnnlstm import Diagnosis, Finding, diagnose

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


# ----------------------------------------------------------------------------- diagnose: lengths


def test_lengths_to_a_forward_without_lengths_is_flagged():
    result = diagnose(PerStepLinear(), (2, 20, 10), lengths=[20, 10])
    assert any("takes no lengths" in w.problem for w in result.warnings)


@pytest.mark.parametrize("head", ["last", "mean", "attention", "frames"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_cnnlstm_with_lengths_gives_no_warnings(head, bidirectional, small_model):
    model = small_model(input_shape=(6, 3, 16, 16), head=head, bidirectional=bidirectional)
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


def test_diagnose_leaves_the_module_untouched(no_hooks):
    model = FramesIntoLSTM()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    diagnose(model, (2, 4, 3, 7, 7))
    assert no_hooks(model)
    for k, v in model.state_dict().items():
        assert v.device.type == "cpu"
        assert torch.equal(v, before[k])


# ----------------------------------------------------------------------------- the wording, pinned


@pytest.mark.parametrize(
    ("module", "shape", "message"),
    [
        (
            FramesIntoLSTM(),
            (8, 16, 3, 7, 7),
            "LSTM 'lstm' wants (N, T, F=512) with batch_first=True, got (8, 16, 64, 7, 7): a clip of feature maps. "
            'Put a bridge in front: bridge="gap" gives F=64, bridge="grid" gives F=256, bridge="flatten" gives '
            'F=3136, bridge="attention" gives F=64.',
        ),
        (
            ClipIntoConv2d(),
            (8, 16, 32, 32, 3),
            "Conv2d 'cnn' wants (N, C=3, H, W), got (8, 16, 32, 32, 3): a 5-D clip; Conv2d takes one batch of images. "
            "Wrap it in cnnlstm.TimeDistributed(...), which folds time into the batch: (N*T, C, H, W), and give the "
            "clip as (N, T, C, H, W): x.permute(0, 1, 4, 2, 3) (or layout='NTHWC' in CNNLSTM).",
        ),
        (
            SeriesIntoConv1d(),
            (8, 100, 6),
            "Conv1d 'conv' wants (N, C=6, T), got (8, 100, 6): a series (N, T, F) with its F=6 features last. "
            "Transpose to (N, F, T): x.transpose(1, 2) gives (8, 6, 100).",
        ),
        (
            TupleIntoLinear(),
            (8, 20, 10),
            "Linear 'fc' wants (..., 256), got ((8, 20, 256), ((1, 8, 256), (1, 8, 256))): the RNN's whole output "
            "tuple (output, state). Unpack it: out, _ = rnn(x), then out[:, -1] for the last step (N, D), "
            "or use head='last'.",
        ),
        (
            BidirectionalHead(),
            (8, 20, 10),
            "Linear 'fc' wants (..., 256), got (8, 512): the bidirectional LSTM gives 2*D=512 features per step, "
            "not D=256. Build it with in_features=512 (2 * hidden_size).",
        ),
    ],
    ids=[
        "clip-maps-into-lstm",
        "channels-last-clip-into-conv2d",
        "series-into-conv1d",
        "tuple-into-linear",
        "seq-first",
    ],
)
def test_the_doctors_messages_word_for_word(module, shape, message):
    result = diagnose(module, shape)
    assert str(result.findings[0]) == message


def test_the_public_names_are_the_doctors():
    import cnnlstm.shapes as shapes

    assert (cnnlstm.diagnose, cnnlstm.explain, cnnlstm.infer) == (shapes.diagnose, shapes.explain, shapes.infer)
    assert (cnnlstm.Diagnosis, cnnlstm.Finding, cnnlstm.Explanation) == (
        shapes.Diagnosis,
        shapes.Finding,
        shapes.Explanation,
    )
