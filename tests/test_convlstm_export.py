"""Exporting a ConvLSTM model: the ONNX clip graph (a Scan over a dynamic T) and step graph (state maps in and
out), verified as the LSTM ones are, at batch 1 and 7 and three clip lengths; TorchScript traces the step only."""

from __future__ import annotations

import ast
import re

import numpy as np
import pytest
import torch
from torch import nn

import cnnlstm as cl
from cnnlstm import export as ex

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

TINY = {"hidden_size": 6, "num_classes": 4, "backbone_options": {"channels": (4, 8)}, "rnn": "convlstm"}
# each exported clip model: (layout, input_shape, options)
VARIANTS = {
    "grid-2layer": ("NTCHW", (None, 3, 32, 32), {"bridge": "grid", "num_layers": 2}),
    "attention-frames-k5-nthwc": (
        "NTHWC",
        (6, 32, 32, 3),
        {"bridge": "attention", "head": "frames", "rnn_options": {"kernel_size": 5}},
    ),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(layout: str, input_shape: tuple, seed: int = 0, **kw) -> cl.CNNLSTM:
    torch.manual_seed(seed)
    model = cl.CNNLSTM(layout=layout, input_shape=input_shape, **{**TINY, **kw})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _session(path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _checked_shapes(report) -> set[tuple]:
    return {ast.literal_eval(re.search(r"\(.*\)", c["input"]).group()) for c in report.checks}


def _op_types(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.fixture(scope="module", params=list(VARIANTS))
def clip_export(request, tmp_path_factory):
    layout, shape, kw = VARIANTS[request.param]
    model = _model(layout, shape, **kw)
    report = ex.export_onnx(model, tmp_path_factory.mktemp("convlstm-onnx") / f"{request.param}.onnx")
    return request.param, model, report


def test_clip_export_is_verified_at_two_batches_and_three_lengths(clip_export):
    name, _, report = clip_export
    assert report.kind == "onnx clip" and report.path.is_file()
    if name == "attention-frames-k5-nthwc":  # T=6 in input_shape: checked at 3, 6, 11; channels last
        want = {(b, t, 32, 32, 3) for b in (1, 7) for t in (3, 6, 11)}
    else:  # T=None: checked around 8
        want = {(b, t, 3, 32, 32) for b in (1, 7) for t in (4, 8, 15)}
    assert _checked_shapes(report) == want
    assert 0 <= report.max_abs_diff <= 1e-5
    assert "Scan" in _op_types(report.path)  # the steps run in a loop over a dynamic T, not unrolled


def test_clip_onnx_runs_at_new_batch_and_lengths_like_pytorch(clip_export):
    name, model, report = clip_export
    sess = _session(report.path)
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, out.name) == ("clip", "logits")
    assert isinstance(inp.shape[0], str) and isinstance(inp.shape[1], str)  # dynamic N and T
    g = torch.Generator().manual_seed(7)
    for n, t in ((3, 1), (2, 13)):
        shape = (n, t, 32, 32, 3) if name == "attention-frames-k5-nthwc" else (n, t, 3, 32, 32)
        x = torch.randn(shape, generator=g)
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(None, {"clip": x.numpy()})[0]
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


def test_step_graph_takes_and_gives_the_state_maps(tmp_path):
    model = _model("NTCHW", (None, 3, 32, 32), seed=1, bridge="grid", num_layers=2)
    report = ex.export_onnx(model, tmp_path / "step.onnx", kind="step")
    assert report.kind == "onnx step"
    assert _checked_shapes(report) == {(1, 3, 32, 32), (7, 3, 32, 32)}  # 6 streamed frames at batch 1 and 7
    assert report.max_abs_diff <= 1e-5
    sess = _session(report.path)
    assert [i.name for i in sess.get_inputs()] == ["frame", "h", "c"]
    assert [o.name for o in sess.get_outputs()] == ["logits", "h_out", "c_out"]
    assert sess.get_inputs()[1].shape[0] == 2 and sess.get_inputs()[1].shape[2:] == [6, 8, 8]
    n = 3
    state = {k: np.zeros((2, n, 6, 8, 8), np.float32) for k in ("h", "c")}
    streamer = model.stream()
    g = torch.Generator().manual_seed(8)
    outs = []
    for _ in range(5):
        frame = torch.randn(n, 3, 32, 32, generator=g)
        ref = streamer.step(frame).numpy()
        logits, *new = sess.run(None, {"frame": frame.numpy(), **state})
        state = dict(zip(state, new))
        np.testing.assert_allclose(logits, ref, rtol=0, atol=1e-5)
        outs.append(logits)
    for k, v in state.items():
        np.testing.assert_allclose(v, streamer.get_state()[k].numpy(), rtol=0, atol=1e-5)
    assert np.abs(outs[-1] - outs[0]).max() > 1e-4  # the carried maps change the answer


def test_torchscript_traces_the_step_and_refuses_the_clip(tmp_path):
    model = _model("NTCHW", (None, 3, 32, 32), bridge="gap")
    with pytest.raises(cl.ConfigError, match=r"does not trace to TorchScript: tracing would fix T.*ONNX"):
        ex.export_torchscript(model, tmp_path / "model.pt")
    assert not list(tmp_path.iterdir())
    report = ex.export_torchscript(model, tmp_path / "step.pt", kind="step")
    assert report.max_abs_diff <= 1e-5 and len(report.checks) == 2
    loaded = torch.jit.load(str(tmp_path / "step.pt"))
    frame, zeros = torch.randn(2, 3, 32, 32), torch.zeros(1, 2, 6, 8, 8)
    logits, h, c = loaded(frame, zeros, zeros)
    with torch.no_grad():
        torch.testing.assert_close(logits, model.stream().step(frame), rtol=0, atol=1e-5)
    assert h.shape == c.shape == (1, 2, 6, 8, 8)
