"""Streaming: ``model.stream()`` equals the full forward step by step; reset, state, refusals; ``cnnlstm stream``."""

import importlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import cnnlstm as cl
from cnnlstm.apps.stream import stream_video
from cnnlstm.cli import main
from cnnlstm.streaming import StepGraph, Streamer, check_streamable

CLIP_BRIDGES = ("gap", "gmp", "grid", "flatten", "attention")
TINY = {"hidden_size": 16, "num_classes": 4, "backbone_options": {"channels": (8, 16)}}


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters, then eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
                m.weight.copy_(1 + torch.randn(m.weight.shape, generator=g) * 0.3)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
    return model.eval()


def _clip_model(seed: int = 0, **kw) -> cl.CNNLSTM:
    torch.manual_seed(seed)
    opts = {**TINY, "input_shape": (None, 3, 32, 32), **kw}
    return _randomize_batchnorm(cl.CNNLSTM(**opts), seed)


def _series_model(seed: int = 0, causal: bool = True, **kw) -> cl.CNNLSTM:
    torch.manual_seed(seed)
    opts = {
        "layout": "NTF",
        "input_shape": (None, 3),
        "bridge": "none",
        "hidden_size": 16,
        "num_classes": 4,
        "backbone_options": {"causal": causal, "channels": (8, 8)},
        **kw,
    }
    return _randomize_batchnorm(cl.CNNLSTM(**opts), seed)


@torch.no_grad()
def _reference(model: cl.CNNLSTM, x: torch.Tensor, t_axis: int = 1) -> torch.Tensor:
    """What each step should return, from full-clip forwards: ``(N, T, classes)``."""
    t = x.shape[t_axis]
    if model.config.head == "frames":
        return model(x)  # one output per step, each seeing only the steps so far
    return torch.stack([model(x.narrow(t_axis, 0, i + 1)) for i in range(t)], dim=1)


def _stream_all(streamer: Streamer, x: torch.Tensor, t_axis: int = 1) -> torch.Tensor:
    return torch.stack([streamer.step(x.select(t_axis, i)) for i in range(x.shape[t_axis])], dim=1)


# ---------------------------------------------------------------------- parity


@pytest.mark.parametrize("head", ["last", "frames"])
@pytest.mark.parametrize("bridge", CLIP_BRIDGES)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_streaming_equals_full_forward_step_by_step(rnn, num_layers, bridge, head):
    model = _clip_model(rnn=rnn, num_layers=num_layers, bridge=bridge, head=head)
    x = torch.randn(3, 6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ref = _reference(model, x)
    assert ref.shape == (3, 6, 4)
    got = _stream_all(model.stream(), x)
    assert got.shape == (3, 6, 4)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    # the check can fail: the outputs do change from step to step
    assert (ref[:, 1:] - ref[:, :-1]).abs().max() > 1e-3


@pytest.mark.parametrize("head", ["last", "frames"])
def test_streaming_nthwc_takes_channels_last_frames(head):
    model = _clip_model(layout="NTHWC", input_shape=(None, 32, 32, 3), bridge="grid", head=head)
    x = torch.randn(2, 5, 32, 32, 3)  # (N, T, H, W, C)
    s = model.stream()
    assert s.step(x[:, 0]).shape == (2, 4)  # (N, H, W, C) frames
    s.reset()
    torch.testing.assert_close(_stream_all(s, x), _reference(model, x), rtol=0, atol=1e-5)
    with pytest.raises(cl.ShapeError, match="3 channels"):
        s.step(torch.randn(2, 3, 32, 32))  # NCHW frames to a channels-last model


def test_streaming_ncthw_takes_nchw_frames():
    model = _clip_model(layout="NCTHW", input_shape=(3, None, 32, 32))
    x = torch.randn(2, 3, 5, 32, 32)  # (N, C, T, H, W)
    torch.testing.assert_close(_stream_all(model.stream(), x, t_axis=2), _reference(model, x, 2), rtol=0, atol=1e-5)


@pytest.mark.parametrize("layout", ["NTF", "NFT"])
@pytest.mark.parametrize("head", ["last", "frames"])
def test_causal_series_model_streams_like_the_full_forward(layout, head):
    shape = (None, 3) if layout == "NTF" else (3, None)
    model = _series_model(layout=layout, input_shape=shape, head=head, rnn="gru")
    x = torch.randn(2, 9, 3)  # (N, T, F): longer than the convs' receptive field (1 + 2 * 4)
    if layout == "NFT":
        x = x.transpose(1, 2)  # (N, F, T)
    t_axis = 1 if layout == "NTF" else 2
    got = _stream_all(model.stream(), x, t_axis)
    torch.testing.assert_close(got, _reference(model, x, t_axis), rtol=0, atol=1e-5)


def test_non_causal_series_model_refuses_to_stream():
    with pytest.raises(cl.ConfigError, match=r"causal'?: True"):
        _series_model(causal=False).stream()


def test_the_streamer_runs_the_exported_step_graph():
    model = _clip_model(bridge="grid", rnn="gru")
    s = model.stream()
    assert isinstance(s.graph, StepGraph)
    assert importlib.import_module("cnnlstm.export").StepGraph is StepGraph  # what the exporters trace
    calls = []
    real = s.graph.step
    s.graph.step = lambda *a, **k: calls.append(a[0].shape) or real(*a, **k)
    frame = torch.randn(2, 3, 32, 32)
    got = s.step(frame)
    assert calls == [(2, 3, 32, 32)]  # one step, through the graph's step
    logits, h = StepGraph(model)(frame, torch.zeros(1, 2, 16))  # the exported function, from a zero state
    torch.testing.assert_close(got, logits, rtol=0, atol=0)
    torch.testing.assert_close(s.state[0], h, rtol=0, atol=0)


def test_step_graph_forward_refuses_a_backbone_that_carries_caches():
    graph = StepGraph(_series_model())
    with pytest.raises(cl.ConfigError, match=r"use step\(\)"):
        graph(torch.randn(2, 3), torch.zeros(1, 2, 16), torch.zeros(1, 2, 16))


# ---------------------------------------------------------------------- reset and state


def test_reset_one_stream_while_the_other_goes_on():
    model = _clip_model(rnn="lstm", num_layers=2, bridge="grid")
    g = torch.Generator().manual_seed(3)
    before, after = torch.randn(2, 4, 3, 32, 32, generator=g), torch.randn(2, 3, 3, 32, 32, generator=g)
    s = model.stream()
    _stream_all(s, before)
    s.reset([1])  # stream B starts over, stream A goes on
    got = _stream_all(s, after)
    a_uninterrupted = _stream_all(model.stream(), torch.cat([before[:1], after[:1]], dim=1))[:, -3:]
    b_fresh = _stream_all(model.stream(), after[1:])
    torch.testing.assert_close(got[:1], a_uninterrupted, rtol=0, atol=1e-5)
    torch.testing.assert_close(got[1:], b_fresh, rtol=0, atol=1e-5)
    assert (got[1:] - _stream_all(model.stream(), torch.cat([before[1:], after[1:]], 1))[:, -3:]).abs().max() > 1e-4


def test_reset_one_series_stream_equals_a_fresh_stream():
    model = _series_model(head="frames")
    g = torch.Generator().manual_seed(4)
    before, after = torch.randn(2, 4, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    s = model.stream()
    _stream_all(s, before)
    s.reset([1])
    got = _stream_all(s, after)
    torch.testing.assert_close(got[1:], _reference(model, after[1:]), rtol=0, atol=1e-5)
    torch.testing.assert_close(got[:1], _reference(model, torch.cat([before[:1], after[:1]], 1))[:, -5:])


def test_reset_all_starts_over_and_allows_another_number_of_streams():
    model = _clip_model(rnn="gru")
    x = torch.randn(2, 3, 3, 32, 32)
    s = model.stream()
    _stream_all(s, x)
    assert s.steps == 3 and s.batch == 2
    with pytest.raises(cl.ShapeError, match=r"2 streams.*reset\(\)"):
        s.step(torch.randn(5, 3, 32, 32))
    s.reset()
    assert s.steps == 0 and s.get_state() == {}
    y = torch.randn(5, 3, 3, 32, 32)
    torch.testing.assert_close(_stream_all(s, y), _reference(model, y), rtol=0, atol=1e-5)


@pytest.mark.parametrize("which", ["lstm", "gru", "series"])
def test_get_state_set_state_round_trip(which):
    model = _series_model() if which == "series" else _clip_model(rnn=which, num_layers=2)
    frame = (3,) if which == "series" else (3, 32, 32)
    g = torch.Generator().manual_seed(5)
    first, then = torch.randn(2, 4, *frame, generator=g), torch.randn(2, 3, *frame, generator=g)
    s = model.stream()
    _stream_all(s, first)
    saved = s.get_state()
    # a series stream also carries each causal convolution's previous inputs (conv0, conv1, ...)
    assert set(saved) == {"lstm": {"h", "c"}, "gru": {"h"}, "series": {"h", "c", "conv0", "conv1"}}[which]
    assert saved["h"].shape == (model.config.num_layers, 2, 16)
    snapshot = {k: v.clone() for k, v in saved.items()}
    saved["h"].add_(100.0)  # get_state hands out copies: changing them changes nothing
    out1 = _stream_all(s, then)
    s.set_state(snapshot)
    out2 = _stream_all(s, then)
    torch.testing.assert_close(out2, out1, rtol=0, atol=0)
    # and the state matters: a fresh stream on the same frames answers differently
    assert (_stream_all(model.stream(), then) - out1).abs().max() > 1e-4


def test_set_state_checks_shapes_and_empty_state_starts_over():
    model = _clip_model(rnn="lstm", num_layers=2)
    s = model.stream()
    s.step(torch.randn(2, 3, 32, 32))
    with pytest.raises(cl.ShapeError, match=r"layers=2, N, D=16"):
        s.set_state({"h": torch.zeros(1, 2, 16), "c": torch.zeros(1, 2, 16)})
    with pytest.raises(cl.ShapeError, match="both 'h' and 'c'"):
        s.set_state({"h": torch.zeros(2, 2, 16)})
    s.set_state({})
    assert s.steps == 0 and s.batch == 0
    s.set_state({"h": torch.zeros(2, 3, 16), "c": torch.zeros(2, 3, 16)})  # a zero state is a fresh start
    x = torch.randn(3, 2, 3, 32, 32)
    torch.testing.assert_close(_stream_all(s, x), _reference(model, x), rtol=0, atol=1e-5)


def test_set_state_does_not_alias_the_callers_conv_caches():
    s = _series_model().stream()
    s.step(torch.randn(2, 3))
    s.step(torch.randn(2, 3))
    state = s.get_state()
    kept = {k: v.clone() for k, v in state.items()}
    s.set_state(state)
    s.reset([0])
    s.step(torch.randn(2, 3))
    for k, v in kept.items():
        torch.testing.assert_close(state[k], v, rtol=0, atol=0)


# ---------------------------------------------------------------------- refusals and wrong shapes


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"bidirectional": True}, r"bidirectional=False"),
        ({"head": "mean"}, r"head='mean'.*use head='last'.*head='frames'"),
        ({"head": "attention"}, r"head='attention'.*use head='last'"),
    ],
)
def test_non_causal_models_refuse_to_stream_and_say_what_to_change(kw, match):
    model = cl.CNNLSTM(input_shape=(None, 3, 32, 32), **TINY, **kw)
    with pytest.raises(cl.ConfigError, match=match):
        model.stream()
    with pytest.raises(cl.ConfigError, match=match):
        check_streamable(model)


def test_image_model_refuses_to_stream():
    model = cl.CNNLSTM(layout="NCHW", input_shape=(3, 32, 32), bridge="spatial", **TINY)
    with pytest.raises(cl.ConfigError, match=r"image model.*no frames to stream"):
        model.stream()


def test_image_model_refusal_says_what_to_change():
    model = cl.CNNLSTM(layout="NCHW", input_shape=(3, 32, 32), bridge="spatial", **TINY)
    with pytest.raises(cl.ConfigError, match=r"NTCHW|NTHWC|layout="):
        model.stream()


def test_wrong_frame_shapes_raise_shape_error():
    s = _clip_model().stream()
    with pytest.raises(cl.ShapeError, match=r"wants \(N, C, H, W\), got 5-D .*without the time axis"):
        s.step(torch.randn(2, 4, 3, 32, 32))  # a clip, not a frame
    with pytest.raises(cl.ShapeError, match=r"got 3-D .*unsqueeze\(0\)"):
        s.step(torch.randn(3, 32, 32))  # one frame without the stream axis
    with pytest.raises(cl.ShapeError, match=r"3 channels.*got \(2, 4, 32, 32\)"):
        s.step(torch.randn(2, 4, 32, 32))
    assert s.step(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    with pytest.raises(cl.ShapeError, match=r"has 2 streams, got a batch of 3"):
        s.step(torch.randn(3, 3, 32, 32))
    series = _series_model().stream()
    with pytest.raises(cl.ShapeError, match=r"wants \(N, F\)"):
        series.step(torch.randn(2, 5, 3))


def test_wrong_frame_size_for_flatten_bridge_is_a_shape_error():
    s = _clip_model(bridge="flatten").stream()
    with pytest.raises(cl.ShapeError, match="flatten"):
        s.step(torch.randn(2, 3, 40, 40))


# ---------------------------------------------------------------------- inference mode, no new modules


def test_step_runs_in_inference_mode_and_creates_no_modules(monkeypatch):
    model = _clip_model(bridge="attention", head="frames", num_layers=2)
    model.train()
    assert any(p.requires_grad for p in model.parameters())
    s = model.stream()
    assert not model.training  # streaming runs the model in eval mode
    ids = {id(m) for m in model.modules()}
    created = []
    real_init = nn.Module.__init__

    def counting_init(self, *a, **k):
        created.append(type(self).__name__)
        real_init(self, *a, **k)

    monkeypatch.setattr(nn.Module, "__init__", counting_init)
    outs = [s.step(torch.randn(2, 3, 32, 32)) for _ in range(4)]
    s.reset()
    s.step(torch.randn(2, 3, 32, 32))
    monkeypatch.undo()
    assert created == [], f"modules built while streaming: {created}"
    assert {id(m) for m in model.modules()} == ids
    for out in outs:
        assert not out.requires_grad and out.grad_fn is None
        assert out.is_inference()


# ---------------------------------------------------------------------- cnnlstm stream


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder trained for 1 epoch by the CLI on tiny moving-digit videos, and the videos' root."""
    from cnnlstm.data.synthetic import make_moving_digits

    root = tmp_path_factory.mktemp("stream")
    videos = make_moving_digits(
        root / "videos", train_per_class=2, test_per_class=1, sizes=((32, 32),), lengths=(11, 13)
    )
    out = root / "run"
    args = ["train", str(videos), "--out", str(out), "--backbone-channels", "4,8", "--bridge", "grid"]
    args += ["--hidden-size", "8", "--clip-len", "4", "--size", "24", "--epochs", "1", "--batch-size", "8"]
    result = CliRunner().invoke(main, [*args, "--workers", "0"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, next(Path(videos, "test").rglob("*.mp4"))


def test_stream_cli_prints_running_prediction_and_writes_timeline(tiny_run, tmp_path):
    run, video = tiny_run
    png = tmp_path / "out.png"
    result = CliRunner().invoke(main, ["stream", str(run), str(video), "--every", "5", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    classes = set(json.loads((run / "labels.json").read_text()))
    assert len(classes) == 8
    lines = result.output.splitlines()
    updates = [ln for ln in lines if ln.startswith("frame ")]
    done = re.search(r"^(\d+) frames streamed; final: (\S+) ([\d.]+)$", result.output, re.M)
    assert done, result.output
    n = int(done.group(1))
    assert n in (11, 12, 13)
    assert len(updates) == n // 5  # every 5 fed frames
    for ln, idx in zip(updates, (4, 9)):
        m = re.match(r"frame +(\d+) \( *[\d.]+ s\): (\S+) ([\d.]+)$", ln)
        assert m, ln
        assert int(m.group(1)) == idx and m.group(2) in classes and 0 < float(m.group(3)) <= 1
    assert done.group(2) in classes
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"timeline: {png}" in result.output


def test_stream_cli_default_plot_path_and_stride(tiny_run):
    run, video = tiny_run
    result = CliRunner().invoke(main, ["stream", str(run), str(video), "--stride", "3", "--every", "2"])
    assert result.exit_code == 0, result.output
    n = int(re.search(r"(\d+) frames streamed", result.output).group(1))
    assert n in (4, 5)  # ceil(11..13 / 3)
    updates = [
        int(re.match(r"frame +(\d+)", ln).group(1)) for ln in result.output.splitlines() if ln.startswith("frame")
    ]
    assert updates == [3, 9][: n // 2]  # the 2nd and 4th fed frames: 0, 3, 6, 9, ...
    png = run / f"stream-{video.stem}.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_stream_video_equals_the_full_forward_on_the_whole_video(tiny_run):
    from cnnlstm.data.transforms import ClipTransform
    from cnnlstm.data.video import iter_frames
    from cnnlstm.run import load_run

    run, video = tiny_run
    r = load_run(run)
    result = stream_video(r, video)
    frames = np.stack(list(iter_frames(video, r.spec.size, r.spec.channels)))  # (T, H, W, C)
    clip = ClipTransform(mean=r.spec.mean, std=r.spec.std)(frames)[None]  # (1, T, C, H, W)
    with torch.no_grad():
        full = torch.stack([r.model(clip[:, : t + 1]).softmax(-1)[0] for t in range(clip.shape[1])])
    assert result["frames"] == list(range(len(frames)))
    assert result["classes"] == r.classes
    np.testing.assert_allclose(result["probs"], full.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"this is not a video at all", "not a readable video"), (b"", "empty file")],
)
def test_stream_cli_broken_video_is_a_clear_error(tiny_run, tmp_path, content, message):
    run, _ = tiny_run
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(content)
    result = CliRunner().invoke(main, ["stream", str(run), str(bad), "--plot", str(tmp_path / "x.png")])
    assert result.exit_code != 0
    assert "Error:" in result.output and message in result.output and "broken.mp4" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.png").exists()


def test_stream_cli_bad_stride_and_not_a_run(tiny_run, tmp_path):
    run, video = tiny_run
    result = CliRunner().invoke(main, ["stream", str(run), str(video), "--stride", "0"])
    assert result.exit_code != 0 and "stride must be a positive" in result.output
    result = CliRunner().invoke(main, ["stream", str(tmp_path), str(video)])
    assert result.exit_code != 0 and "not a finished cnnlstm run" in result.output
