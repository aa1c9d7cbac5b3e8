"""Motion input: frame differences in front of the CNN, in the clip forward, with lengths, and streamed."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnlstm as cl
from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.motion import FrameDifference


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 3), t=st.integers(1, 6), c=st.sampled_from([1, 3]), mode=st.sampled_from(["diff", "stack"]))
def test_differences_are_each_frame_minus_the_one_before(n, t, c, mode):
    x = torch.randn(n, t, c, 5, 4)
    y = FrameDifference(mode)(x)
    d = y if mode == "diff" else y[:, :, c:]
    assert y.shape == (n, t, c if mode == "diff" else 2 * c, 5, 4)
    assert torch.equal(d[:, 0], torch.zeros_like(x[:, 0]))
    for k in range(1, t):
        torch.testing.assert_close(d[:, k], x[:, k] - x[:, k - 1], rtol=0, atol=0)
    if mode == "stack":
        assert torch.equal(y[:, :, :c], x)


def test_step_equals_the_clip_frame_by_frame():
    m, x = FrameDifference("stack"), torch.randn(2, 5, 3, 4, 4)
    clip = m(x)
    prev = None
    for t in range(5):
        torch.testing.assert_close(m.step(x[:, t], prev), clip[:, t], rtol=0, atol=0)
        prev = x[:, t]


def test_unknown_mode_and_frames_without_time_are_refused():
    with pytest.raises(ConfigError, match="none, diff, stack"):
        FrameDifference("flow")
    with pytest.raises(ShapeError, match="time axis"):
        FrameDifference("diff")(torch.zeros(2, 3, 8, 8))


def _model(mode: str, **kw) -> cl.CNNLSTM:
    torch.manual_seed(0)
    return cl.CNNLSTM(input_shape=(None, 3, 16, 16), hidden_size=8, num_classes=3, motion=mode, bridge="grid",
                      backbone_options={"channels": (4, 8)}, **kw).eval()  # fmt: skip


@pytest.mark.parametrize("mode", ["diff", "stack"])
def test_the_model_reads_the_motion_input_and_keeps_its_config(mode, tmp_path):
    m = _model(mode)
    first = next(mod for mod in m.backbone.modules() if isinstance(mod, torch.nn.Conv2d))
    assert first.in_channels == (6 if mode == "stack" else 3)
    x = torch.randn(2, 5, 3, 16, 16)
    with torch.no_grad():
        y = m(x)
        # a still clip has no motion: with diff only the frames' content cannot matter
        if mode == "diff":
            still = x[:, :1].expand(-1, 5, -1, -1, -1)
            torch.testing.assert_close(m(still), m(still * 2 + 1))
    m.save_pretrained(tmp_path)
    back = cl.CNNLSTM.from_pretrained(tmp_path).eval()
    assert back.config.motion == mode
    with torch.no_grad():
        torch.testing.assert_close(back(x), y)


def test_motion_on_series_or_images_is_refused():
    with pytest.raises(ConfigError, match="needs clips"):
        cl.CNNLSTM(input_shape=(20, 4), layout="NTF", motion="diff")


def test_padded_steps_do_not_change_a_motion_models_output():
    m, x = _model("stack"), torch.randn(2, 6, 3, 16, 16)
    with torch.no_grad():
        padded = m(x, lengths=torch.tensor([6, 4]))
        torch.testing.assert_close(padded[1], m(x[1:, :4])[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["diff", "stack"])
def test_streaming_a_motion_model_equals_the_clip_so_far(mode):
    m, x = _model(mode), torch.randn(2, 7, 3, 16, 16)
    s = m.stream()
    for t in range(7):
        got = s.step(x[:, t])
        with torch.no_grad():
            torch.testing.assert_close(got, m(x[:, : t + 1]), rtol=1e-5, atol=1e-5)


def test_a_reset_stream_starts_its_differences_over_and_the_state_round_trips():
    m, x = _model("stack"), torch.randn(2, 7, 3, 16, 16)
    s = m.stream()
    for t in range(3):
        s.step(x[:, t])
    s.reset([1])
    saved = m.stream()
    saved.set_state(s.get_state())
    for t in range(3, 7):
        got, again = s.step(x[:, t]), saved.step(x[:, t])
    with torch.no_grad():
        torch.testing.assert_close(got[1], m(x[1:, 3:])[0], rtol=1e-5, atol=1e-5)  # stream 1 began at frame 3
        torch.testing.assert_close(got[0], m(x[:1])[0], rtol=1e-5, atol=1e-5)  # stream 0 went on
    torch.testing.assert_close(again, got)


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_the_step_export_carries_the_previous_frame_and_is_verified(rnn, tmp_path):
    from cnnlstm.export import export_onnx

    report = export_onnx(_model("stack", rnn=rnn), tmp_path / "step.onnx", kind="step")
    assert report.max_abs_diff < 1e-4 and len(report.checks) >= 2  # 6 streamed frames at two batch sizes


def test_the_clip_and_torchscript_step_exports_of_a_motion_model_are_verified(tmp_path):
    from cnnlstm.export import export_onnx, export_torchscript

    m = _model("diff")
    assert export_onnx(m, tmp_path / "clip.onnx").max_abs_diff < 1e-4
    assert export_torchscript(m, tmp_path / "step.pt", kind="step").max_abs_diff < 1e-5
