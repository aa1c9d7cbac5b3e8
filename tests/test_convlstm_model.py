"""CNNLSTM(rnn="convlstm"): backbone -> ConvLSTM -> bridge per step -> head; sizes, lengths, config, refusals,
the shape doctor on the model."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import cnnlstm as cl
from cnnlstm.build import ModelOptions, build_cnnlstm, model_kwargs
from cnnlstm.cli import main
from cnnlstm.errors import ConfigError, ShapeError

TINY = {"hidden_size": 6, "num_classes": 4, "backbone_options": {"channels": (4, 8)}, "rnn": "convlstm"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed: int = 0, **kw) -> cl.CNNLSTM:
    torch.manual_seed(seed)
    return cl.CNNLSTM(**{"input_shape": (5, 3, 32, 32), **TINY, **kw}).eval()


def _clip(n: int = 3, t: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, t, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- the parts and their sizes


@pytest.mark.parametrize(
    ("bridge", "f"), [("gap", 6), ("gmp", 6), ("grid", 6 * 4), ("flatten", 6 * 8 * 8), ("attention", 6)]
)
def test_the_bridge_reads_the_convlstms_maps_and_every_size_is_inferred(bridge, f):
    parts = build_cnnlstm(input_shape=(5, 3, 32, 32), bridge=bridge, **TINY)
    assert isinstance(parts.rnn, cl.ConvLSTM)
    assert parts.feature_shape == (5, 8, 8, 8)  # the backbone's (T, C', H', W')
    assert (parts.rnn.in_channels, parts.rnn.hidden_size) == (8, 6)
    assert parts.head.in_features == f  # the bridge's F over the ConvLSTM's (D=6, 8, 8) maps
    if bridge == "attention":
        assert parts.bridge.channels == 6  # the ConvLSTM's channels, not the backbone's
    assert _model(bridge=bridge)(_clip()).shape == (3, 4)


@pytest.mark.parametrize("head", ["last", "mean", "attention", "frames"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_every_head_and_depth(head, num_layers):
    model = _model(head=head, num_layers=num_layers, bridge="grid")
    out = model(_clip())
    assert out.shape == ((3, 5, 4) if head == "frames" else (3, 4))
    assert torch.isfinite(out).all()
    assert cl.infer(model, (3, 5, 3, 32, 32)) == out.shape


def test_the_model_runs_the_convlstm_on_the_maps_then_the_bridge_then_the_head():
    model = _model(bridge="grid", num_layers=2)
    x = _clip()
    with torch.no_grad():
        maps = model.backbone(x)  # (N, T, C', H', W')
        states, _ = model.rnn(maps)  # (N, T, D, H', W')
        want = model.head(model.bridge(states))
        torch.testing.assert_close(model(x), want, rtol=0, atol=0)
        # features() is what the recurrent part reads: for a ConvLSTM, the backbone's maps
        torch.testing.assert_close(model.features(x), maps, rtol=0, atol=0)
    assert model.features(x).shape == (3, 5, 8, 8, 8)
    assert model.rnn_reads_maps and not _model(rnn="lstm").rnn_reads_maps


def test_gradients_reach_the_backbone_and_the_convlstm():
    model = _model(bridge="attention").train()
    model(_clip()).logsumexp(-1).mean().backward()
    for name in ("backbone.module.block1.conv.weight", "rnn.cells.0.weight", "bridge.score.weight", "head.fc.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_kernel_size_goes_through_rnn_options():
    model = _model(rnn_options={"kernel_size": 5})
    assert model.rnn.kernel_size == (5, 5) and model.rnn.cells[0].weight.shape == (24, 14, 5, 5)
    assert _model().rnn.kernel_size == (3, 3)
    assert model(_clip()).shape == (3, 4)


@pytest.mark.parametrize("head", ["last", "frames"])
def test_lengths_match_the_unpadded_clips(head):
    model = _model(head=head, bridge="grid", num_layers=2)
    x = _clip(t=5)
    lengths = [5, 3, 1]
    with torch.no_grad():
        out = model(x, lengths=lengths)
        for i, n in enumerate(lengths):
            alone = model(x[i : i + 1, :n])[0]
            torch.testing.assert_close(out[i, :n] if head == "frames" else out[i], alone, rtol=0, atol=1e-5)
            if head == "frames" and n < 5:
                assert out[i, n:].abs().max() == 0  # padded steps give zeros


def test_any_clip_length_when_t_is_none():
    model = _model(input_shape=(None, 3, 32, 32))
    for t in (1, 2, 9):
        assert model(_clip(n=2, t=t)).shape == (2, 4)


def test_existing_models_build_as_before():
    """The LSTM/GRU road is untouched: the same parts, no rnn_options, a Temporal over the bridged sequence."""
    parts = build_cnnlstm(input_shape=(5, 3, 32, 32), **{**TINY, "rnn": "gru"}, bridge="grid")
    assert isinstance(parts.rnn, cl.Temporal) and parts.rnn.input_size == 32
    assert parts.config.rnn_options == {}


# ----------------------------------------------------------------------------- config and saving


def test_config_json_round_trip_and_save_load_bit_identical(tmp_path):
    model = _model(bridge="grid", num_layers=2, dropout=0.1, rnn_options={"kernel_size": [3, 5]})
    data = json.loads(model.config.to_json())
    assert (data["rnn"], data["rnn_options"], data["num_layers"]) == ("convlstm", {"kernel_size": [3, 5]}, 2)
    out = model.save_pretrained(tmp_path / "m")
    loaded = cl.CNNLSTM.from_pretrained(out).eval()
    assert isinstance(loaded.rnn, cl.ConvLSTM) and loaded.rnn.kernel_size == (3, 5)
    x = _clip(seed=2)
    assert torch.equal(loaded(x), model(x))
    assert loaded.config.to_json() == model.config.to_json()


def test_a_config_written_before_rnn_options_loads():
    data = _model(rnn="lstm").config.to_dict()
    del data["rnn_options"]
    assert cl.CNNLSTMConfig.from_dict(data).rnn_options == {}
    assert cl.CNNLSTM.from_config(data)(_clip()).shape == (3, 4)


def test_model_options_carry_the_kernel_size():
    kw = model_kwargs("video", ModelOptions(rnn="convlstm", rnn_kernel_size=5, hidden_size=8))
    assert (kw["rnn"], kw["rnn_options"], kw["hidden_size"]) == ("convlstm", {"kernel_size": 5}, 8)
    assert "rnn_options" not in model_kwargs("video", ModelOptions(rnn="convlstm"))


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"bidirectional": True}, ConfigError, r"bidirectional ConvLSTM is not implemented.*bidirectional=False"),
        ({"bridge": "none"}, ConfigError, r"bridge 'none' takes \(N, T, F\) but the ConvLSTM gives .*use bridge='gap'"),
        ({"rnn_options": {"stride": 2}}, ConfigError, r"does not take these rnn_options \['stride'\]"),
        ({"rnn_options": {"kernel_size": 0}}, ConfigError, r"kernel_size must be a positive int"),
        ({"rnn": "lstm", "rnn_options": {"kernel_size": 3}}, ConfigError, r"rnn='lstm' takes no rnn_options"),
        ({"rnn": "convlstmm"}, ConfigError, r"unknown rnn 'convlstmm': expected one of lstm, gru, convlstm"),
        (
            {"layout": "NCHW", "input_shape": (3, 32, 32), "bridge": "spatial"},
            ConfigError,
            r"an image has no time axis.*layout='NTCHW'",
        ),
    ],
)
def test_bad_construction(kw, error, match):
    with pytest.raises(error, match=match):
        _model(**kw)


def test_a_sequence_model_fed_to_a_convlstm_gets_the_fix():
    with pytest.raises(ShapeError, match=r"rnn='convlstm' wants a clip's feature maps .*feeds it a sequence "
                       r"\(N, T, F\).*Use rnn='lstm'"):  # fmt: skip
        _model(layout="NTF", input_shape=(None, 3), backbone="conv1d", bridge="none")


def test_a_backbone_that_gives_features_gets_the_fix():
    flat = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, 8) per frame
    with pytest.raises(ShapeError, match=r"backbone 'custom' gives \(1, 5, 8\): a sequence of features.*"
                       r"do not bridge before it.*rnn='lstm' for flat features \(N, T, F=8\)"):  # fmt: skip
        _model(backbone=flat)


# ----------------------------------------------------------------------------- the shape doctor on the model


def test_explain_shows_the_convlstm_row_with_its_shapes():
    table = str(cl.explain(_model(bridge="grid"), (2, 5, 3, 32, 32)))
    row = next(line for line in table.splitlines() if line.strip().startswith("rnn "))
    assert "ConvLSTM" in row and "(2, 5, 8, 8, 8)" in row  # in: the backbone's maps
    assert "((2, 5, 6, 8, 8), ((1, 2, 6, 8, 8), (1, 2, 6, 8, 8)))" in row  # out: the outputs and the (h, c) maps
    bridge_row = next(line for line in table.splitlines() if line.strip().startswith("bridge "))
    assert "(2, 5, 6, 8, 8)" in bridge_row and "(2, 5, 24)" in bridge_row


def test_diagnose_a_convlstm_model_with_lengths_is_ok():
    result = cl.diagnose(_model(), (3, 5, 3, 32, 32), lengths=[5, 3, 1])
    assert result.ok and not result.warnings and result.output == (3, 4)


def test_cnnlstm_doctor_shows_the_convlstm_row():
    args = ["doctor", "--rnn", "convlstm", "--hidden-size", "8", "--rnn-kernel-size", "5", "--input", "2,4,3,64,64"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.strip().startswith("rnn "))
    assert "ConvLSTM" in row and "(2, 4, 256, 4, 4)" in row and "(2, 4, 8, 4, 4)" in row
    assert row.split()[-1] == f"{4 * 8 * (256 + 8) * 5 * 5 + 4 * 8:,}"  # a 5x5 kernel over cat(x, h)
    assert "ok: output (2, 10)" in result.output


def test_cnnlstm_doctor_refuses_a_sequence_for_a_convlstm():
    result = CliRunner().invoke(main, ["doctor", "--rnn", "convlstm", "--layout", "NTF", "--input", "2,16,3"])
    assert result.exit_code != 0
    assert "rnn='convlstm' wants a clip's feature maps" in result.output and "rnn='lstm'" in result.output
