"""Streaming a ConvLSTM model: the carried state is (h, c) maps; steps equal the full clip; reset, get/set state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnlstm as cl
from cnnlstm.streaming import StepGraph, Streamer

TINY = {"hidden_size": 6, "num_classes": 4, "backbone_options": {"channels": (4, 8)}, "rnn": "convlstm"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed: int = 0, **kw) -> cl.CNNLSTM:
    """A tiny ConvLSTM model with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = cl.CNNLSTM(**{"input_shape": (None, 3, 32, 32), **TINY, **kw})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _frames(n: int, t: int, seed: int = 1, shape: tuple = (3, 32, 32)) -> torch.Tensor:
    return torch.randn(n, t, *shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _reference(model: cl.CNNLSTM, x: torch.Tensor) -> torch.Tensor:
    """Each step's answer from full-clip forwards: ``(N, T, classes)``."""
    if model.config.head == "frames":
        return model(x)
    return torch.stack([model(x[:, : i + 1]) for i in range(x.shape[1])], dim=1)


def _stream_all(streamer: Streamer, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([streamer.step(x[:, i]) for i in range(x.shape[1])], dim=1)


@pytest.mark.parametrize("head", ["last", "frames"])
@pytest.mark.parametrize("bridge", ["gap", "grid", "flatten", "attention"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_streaming_equals_the_full_clip(num_layers, bridge, head):
    model = _model(num_layers=num_layers, bridge=bridge, head=head)
    x = _frames(3, 6)
    ref = _reference(model, x)
    got = _stream_all(model.stream(), x)
    assert got.shape == ref.shape == (3, 6, 4)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    assert (ref[:, 1:] - ref[:, :-1]).abs().max() > 1e-4  # the answers do move from step to step


def test_streaming_channels_last_frames():
    model = _model(layout="NTHWC", input_shape=(None, 32, 32, 3), bridge="grid")
    x = _frames(2, 4, shape=(32, 32, 3))  # (N, T, H, W, C)
    torch.testing.assert_close(_stream_all(model.stream(), x), _reference(model, x), rtol=0, atol=1e-5)


def test_the_state_is_h_and_c_maps_and_the_step_graph_is_the_streamers():
    model = _model(num_layers=2, bridge="grid")
    s = model.stream()
    assert isinstance(s.graph, StepGraph) and s.rnn is model.rnn
    frame = _frames(2, 1)[:, 0]
    got = s.step(frame)
    state = s.get_state()
    assert set(state) == {"h", "c"} and state["h"].shape == state["c"].shape == (2, 2, 6, 8, 8)
    zeros = torch.zeros(2, 2, 6, 8, 8)
    logits, h, c = StepGraph(model)(frame, zeros, zeros)  # the exported function, from a zero state
    torch.testing.assert_close(got, logits, rtol=0, atol=0)
    torch.testing.assert_close((state["h"], state["c"]), (h, c), rtol=0, atol=0)


def test_reset_one_stream_while_the_other_goes_on():
    model = _model(num_layers=2, bridge="grid")
    before, after = _frames(2, 3, seed=3), _frames(2, 4, seed=4)
    s = model.stream()
    _stream_all(s, before)
    s.reset([1])
    got = _stream_all(s, after)
    a_on = _stream_all(model.stream(), torch.cat([before[:1], after[:1]], 1))[:, -4:]
    torch.testing.assert_close(got[:1], a_on, rtol=0, atol=1e-5)
    torch.testing.assert_close(got[1:], _reference(model, after[1:]), rtol=0, atol=1e-5)


def test_get_state_set_state_round_trip():
    model = _model(num_layers=2)
    first, then = _frames(2, 3, seed=5), _frames(2, 3, seed=6)
    s = model.stream()
    _stream_all(s, first)
    saved = s.get_state()
    snapshot = {k: v.clone() for k, v in saved.items()}
    saved["c"].add_(100.0)  # copies: changing them changes nothing
    out1 = _stream_all(s, then)
    s.set_state(snapshot)
    torch.testing.assert_close(_stream_all(s, then), out1, rtol=0, atol=0)
    assert (_stream_all(model.stream(), then) - out1).abs().max() > 1e-4  # the state matters


def test_set_state_checks_the_maps():
    model = _model(num_layers=2)
    s = model.stream()
    s.step(_frames(2, 1)[:, 0])
    with pytest.raises(cl.ShapeError, match=r"a stream state is \(layers=2, N, D=6, H', W'\), got \(2, 2, 6\)"):
        s.set_state({"h": torch.zeros(2, 2, 6), "c": torch.zeros(2, 2, 6)})
    with pytest.raises(cl.ShapeError, match=r"a ConvLSTM's state needs both 'h' and 'c'"):
        s.set_state({"h": torch.zeros(2, 2, 6, 8, 8)})
    with pytest.raises(cl.ShapeError, match=r"h and c have one shape"):
        s.set_state({"h": torch.zeros(2, 2, 6, 8, 8), "c": torch.zeros(2, 2, 6, 4, 4)})
    s.set_state({"h": torch.zeros(2, 3, 6, 4, 4), "c": torch.zeros(2, 3, 6, 4, 4)})  # maps of other frames
    with pytest.raises(cl.ShapeError, match=r"state h must be \(layers, N, D, H, W\) = \(2, 3, 6, 8, 8\).*other"):
        s.step(_frames(3, 1)[:, 0])
    s.set_state({"h": torch.zeros(2, 3, 6, 8, 8), "c": torch.zeros(2, 3, 6, 8, 8)})  # zeros: a fresh start
    x = _frames(3, 2)
    torch.testing.assert_close(_stream_all(s, x), _reference(model, x), rtol=0, atol=1e-5)


def test_frames_of_another_size_stream_with_their_own_maps():
    model = _model(bridge="gap")  # gap takes any frame size, and so does the ConvLSTM
    x = _frames(2, 3, shape=(3, 48, 40))
    s = model.stream()
    torch.testing.assert_close(_stream_all(s, x), _reference(model, x), rtol=0, atol=1e-5)
    assert s.get_state()["h"].shape == (1, 2, 6, 12, 10)


def test_a_bidirectional_convlstm_is_refused_before_streaming():
    with pytest.raises(cl.ConfigError, match="bidirectional=False"):
        _model(bidirectional=True)
    with pytest.raises(cl.ConfigError, match=r"head='mean'.*head='last'"):
        _model(head="mean").stream()
