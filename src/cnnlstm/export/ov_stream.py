"""The streaming step as a stateful OpenVINO model: the state stays in the runtime between calls.

The step graph (``frame, h[, c][, previous] → logits, h_out[, c_out][, previous_out]``) becomes a model of one
input, ``frame``, and one output, ``logits``: each carried tensor is an OpenVINO variable, read at the start of
a call (``ReadValue``) and written at its end (``Assign``). An infer request keeps its variables from call to
call; ``InferRequest.reset_state()`` starts its streams over. A fresh stream's ``h`` and ``c`` are zeros of the
batch of the first frame after a reset (the batch may change only at a reset). A model with motion input keeps
the last frame in ``previous`` and a per-stream flag ``started``: at a stream's first frame the graph reads the
frame itself as its previous, as :class:`~cnnlstm.streaming.Streamer` does. (The first frame is not the
variable's initial value itself: OpenVINO's CPU plugin then stores the wrong frame in it, one call late.)

The int8 stream (:func:`export_openvino_stream_int8`) is the NNCF-quantized step made stateful in the same way: its
ranges are the int8 step's, calibrated on clips streamed through the float32 step with the state carried
(:func:`~.calibrate.step_feeds`). NNCF also quantizes the stateful IR itself, but then its ranges come from however
NNCF's calibration runs a stateful request, not from the states a stream meets: on a tiny motion model it put 16
FakeQuantize nodes where the step has 10, and streamed 0.17 away from float32 where the quantized step stays 0.02.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ConfigError, ExportError, require
from ._common import ExportReport, clip_shape, frame_shape, lengths_to_check
from .verify import OV_CONFIG, _agreement

if TYPE_CHECKING:
    from ..model import CNNLSTM

__all__ = ["check_stream", "export_openvino_stream", "export_openvino_stream_int8", "stateful_step"]


def export_openvino_stream(
    model: CNNLSTM,
    path: str | Path,
    *,
    onnx: str | Path | None = None,
    verify: bool = True,
    tol: float = 1e-4,
    batches: tuple[int, ...] = (1, 7),
) -> ExportReport:
    """Export a clip model's streaming step as a stateful OpenVINO IR (``.xml`` + ``.bin``): input ``frame``
    ``(N, C, H, W)`` in the model's frame layout, output ``logits``, the RNN state held in the runtime.

    Args:
        model: a clip model that can stream (eval mode).
        path: the ``.xml`` to write.
        onnx: the model's verified ONNX step graph; None: exported (and verified) into a temporary folder.
        verify: stream random clips of each batch size in ``batches`` at three lengths, the request reset before
            each, and compare the last frame's logits with the model's on the whole clip.
        tol: the largest absolute difference allowed.

    Returns:
        An :class:`ExportReport` of kind ``"openvino stream"``.

    Raises:
        MissingDependencyError: openvino is not installed (``pip install 'cnnlstm[edge]'``).
        ConfigError: the model cannot stream (the message says what to change).
        ExportError: verification failed (the files stay, for inspection).
    """
    ov = require("openvino", "edge", "OpenVINO export")
    path = Path(path)
    if path.suffix != ".xml":
        raise ConfigError(f"an OpenVINO IR is an .xml file (and a .bin beside it): got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with model.autocast("32"), tempfile.TemporaryDirectory() as tmp:
        if onnx is None:
            from .onnx import export_onnx

            onnx = export_onnx(model, Path(tmp) / "step.onnx", kind="step", tol=tol, batches=batches).path
        ov.save_model(stateful_step(ov.Core().read_model(str(onnx))), str(path), compress_to_fp16=False)
        report = ExportReport(path, "openvino stream")
        if verify:
            report.checks = check_stream(model, path, batches)
            if not report.max_abs_diff <= tol:
                raise ExportError(
                    f"{path}: the stateful OpenVINO stream differs from the PyTorch clip by "
                    f"{report.max_abs_diff:.2e} (> {tol:.0e}):\n{report}"
                )
    return report


def export_openvino_stream_int8(
    model: CNNLSTM,
    step: str | Path,
    path: str | Path,
    fp32: str | Path,
    clips: torch.Tensor,
    sample: str = "",
) -> ExportReport:
    """The int8 stream: the NNCF-quantized step IR ``step`` (``step.int8.xml``) made stateful as
    :func:`stateful_step` makes the float32 one, checked against the float32 stream ``fp32`` on ``clips``
    ``(N, T, ...)`` streamed frame by frame.

    Returns:
        An :class:`ExportReport` of kind ``"openvino stream"`` and precision ``int8`` whose check holds the share of
        streamed frames with float32's top-1 class and the largest difference of the logits.
    """
    ov = require("openvino", "edge", "OpenVINO export")
    path = Path(path)
    ov.save_model(stateful_step(ov.Core().read_model(str(step))), str(path), compress_to_fp16=False)
    what = " ".join(w for w in (str(len(clips)), sample, "clips not used in calibration, streamed") if w)
    t_axis = model.layout.value.index("T")
    check = {"input": what, **_agreement(*(_stateful_logits(p, clips, t_axis) for p in (fp32, path)))}
    return ExportReport(path, "openvino stream", [check], precision="int8")


def _stateful_logits(path: str | Path, clips: torch.Tensor, t_axis: int, batch: int = 8) -> np.ndarray:
    """Each frame's logits ``(N, T, classes)`` of ``clips`` ``(N, T, ...)`` streamed through the stateful IR at
    ``path`` (compiled with float32 compute), ``batch`` streams at a time, the request reset before each batch."""
    ov = require("openvino", "edge", "running an OpenVINO IR")
    request = ov.Core().compile_model(str(path), "CPU", OV_CONFIG).create_infer_request()
    out = []
    for i in range(0, len(clips), batch):
        part = clips[i : i + batch].numpy()
        request.reset_state()
        frames = [np.ascontiguousarray(np.take(part, t, axis=t_axis)) for t in range(part.shape[t_axis])]
        out.append(np.stack([request.infer({"frame": f})[0].copy() for f in frames], 1))  # (B, T, classes)
    return np.concatenate(out)


def stateful_step(step: Any) -> Any:
    """The step graph's ``ov.Model`` with its carried tensors as variables (see the module's notes): inputs
    ``frame``, outputs ``logits``; variables ``h``[, ``c``][, ``previous``, ``started``]."""
    ov = require("openvino", "edge", "OpenVINO export")
    o = ov.opset13
    params = {p.output(0).get_any_name(): p for p in step.get_parameters()}
    results = {r.input_value(0).get_any_name(): r for r in step.get_results()}
    frame = params["frame"]
    n = o.gather(o.shape_of(frame, "i64"), _i64([0]), _i64(0))  # (1,): the batch of this call's frames
    sinks = []
    for name, param in params.items():
        if name == "frame":
            continue
        shape = (
            param.get_partial_shape()
        )  # (layers, N, D) or a ConvLSTM's (layers, N, D, H', W'); previous: the frame's
        axis = 0 if name == "previous" else 1
        dims = [n if i == axis else _i64([d.get_length()]) for i, d in enumerate(shape)]
        zeros = o.broadcast(o.constant(np.float32(0)), o.concat(dims, 0))
        state = _Variable(ov, name, shape)
        value = state.read(zeros)
        source = value
        if name == "previous":  # a stream's first frame is its own previous: started is 0 there, 1 after
            flag_shape = [n] + [_i64([1])] * (shape.rank.get_length() - 1)  # (N, 1, 1, 1)
            flag = _Variable(ov, "started", ov.PartialShape([-1] + [1] * (shape.rank.get_length() - 1)))
            started = flag.read(o.broadcast(o.constant(np.float32(0)), o.concat(flag_shape, 0)))
            source = o.add(frame, o.multiply(started, o.subtract(value, frame)))  # frame + started * (prev - frame)
            sinks.append(flag.write(o.broadcast(o.constant(np.float32(1)), o.concat(flag_shape, 0))))
        for target in list(param.output(0).get_target_inputs()):
            target.replace_source_output(source.output(0))
        sinks.append(state.write(results[f"{name}_out"].input_value(0)))
    return ov.Model([results["logits"]], sinks, [frame], "cnnlstm_stream")


def _i64(x) -> Any:
    import openvino as ov

    return ov.opset13.constant(np.array(x, np.int64))


class _Variable:
    """One OpenVINO variable: ``read(init)`` gives its ``ReadValue`` (init: its value after a reset),
    ``write(x)`` its ``Assign``."""

    def __init__(self, ov: Any, name: str, shape: Any):
        from openvino.op.util import Variable, VariableInfo

        info = VariableInfo()
        info.variable_id, info.data_shape, info.data_type = name, shape, ov.Type.f32
        self.ov, self.variable = ov, Variable(info)

    def read(self, init: Any) -> Any:
        return self.ov.opset6.read_value(init, self.variable)

    def write(self, value: Any) -> Any:
        # through a Convert: Assign takes a node, and an output may be a parameter (previous_out is the frame)
        return self.ov.opset6.assign(self.ov.opset13.convert(value, "f32"), self.variable)


@torch.inference_mode()
def check_stream(model: CNNLSTM, path: Path, batches: tuple[int, ...]) -> list[dict[str, Any]]:
    """The stateful IR against the model's whole-clip forward: one infer request, reset before each clip, each
    batch size in ``batches`` at three lengths; one check per clip (the last frame's logits; a per-frame head:
    every frame's)."""
    ov = require("openvino", "edge", "running an OpenVINO IR")
    request = ov.Core().compile_model(str(path), "CPU", OV_CONFIG).create_infer_request()
    t_axis = model.layout.value.index("T")
    checks = []
    for b in batches:
        for t in lengths_to_check(model):
            x = torch.randn(clip_shape(model, b, t))  # (N, T, ...) in the model's layout
            ref = model(x).numpy()  # (N, classes), or (N, T, classes) per frame
            request.reset_state()
            got = [request.infer({"frame": x.select(t_axis, i).numpy()})[0].copy() for i in range(t)]
            got = np.stack(got, 1) if ref.ndim == 3 else got[-1]
            shape = (b, *frame_shape(model))
            checks.append({"input": f"{t} frames {shape}, reset first", "max_abs_diff": float(np.abs(ref - got).max())})
    return checks
