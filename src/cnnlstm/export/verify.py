"""Run an exported graph in its runtime and check it against PyTorch: the same checks for every runtime.

A *runner* is ``run(feeds) -> outputs``: a dict of input name to array in, the outputs as arrays in the graph's
output order. :func:`runner` makes one for an ONNX file (onnxruntime) or an OpenVINO IR (``.xml``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ConfigError, ExportError, require
from ._common import clip_shape, frame_shape, lengths_to_check, session, state_shapes, step_names

if TYPE_CHECKING:
    from ..model import CNNLSTM

__all__ = ["OV_CONFIG", "Runner", "agree_clip", "agree_step", "check_clip", "check_step", "runner", "stream_logits"]

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]

# OpenVINO's CPU plugin computes in bfloat16 by default where the processor has it: the float32 IR is checked
# (and described in export.json) as compiled with float32 compute
OV_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


def runner(path: str | Path) -> Runner:
    """A runner for the graph at ``path``: ``*.onnx`` in onnxruntime (CPU), ``*.xml`` in OpenVINO (CPU, float32
    compute: :data:`OV_CONFIG`)."""
    path = Path(path)
    if path.suffix == ".onnx":
        sess = session(path)
        return lambda feeds: sess.run(None, feeds)
    if path.suffix == ".xml":
        ov = require("openvino", "edge", "running an OpenVINO IR")
        compiled = ov.Core().compile_model(str(path), "CPU", OV_CONFIG)
        outputs = compiled.outputs

        def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            result = compiled(feeds)  # copies of the outputs: a carried state outlives the next call
            return [result[o] for o in outputs]

        return run
    raise ConfigError(f"no runtime for {path.name!r}: expected an ONNX file (.onnx) or an OpenVINO IR (.xml)")


@torch.inference_mode()
def check_clip(model: CNNLSTM, run: Runner, path: Path, batches: tuple[int, ...]) -> list[dict[str, Any]]:
    """The clip graph against ``model`` on fresh random clips: each batch in ``batches`` at three lengths
    (:func:`~._common.lengths_to_check`); one check ``{"input", "max_abs_diff"}`` per clip shape."""
    checks = []
    for b in batches:
        for t in lengths_to_check(model):
            x = torch.randn(clip_shape(model, b, t))  # (N, T, ...) in the model's layout
            ref = model(x).numpy()
            try:
                got = run({"clip": x.numpy()})[0]
            except Exception as e:  # the runtime's own error types
                raise ExportError(
                    f"the exported graph {path} cannot run a clip {tuple(x.shape)} that the model runs: "
                    f"{str(e).splitlines()[0][:300]}"
                ) from None
            checks.append({"input": f"clip {tuple(x.shape)}", "max_abs_diff": float(np.abs(ref - got).max())})
    return checks


@torch.inference_mode()
def check_step(model: CNNLSTM, run: Runner, batches: tuple[int, ...], frames: int = 6) -> list[dict[str, Any]]:
    """The step graph against ``model.stream()``: a stream of ``frames`` random frames per batch size, the state
    carried by the graph's own outputs; one check ``{"input", "max_abs_diff"}`` (the worst frame) per batch."""
    fshape = frame_shape(model)
    names = step_names(model)[0][1:]  # h[, c][, previous]
    checks = []
    for b in batches:
        streamer = model.stream()
        carried = [np.zeros(shape, np.float32) for shape in state_shapes(model, b)]
        worst = 0.0
        for i in range(frames):
            frame = torch.randn(b, *fshape)  # (N, C, H, W) in the model's frame layout
            ref = streamer.step(frame).numpy()
            if i == 0 and "previous" in names:  # a stream's start: the frame is its own previous (no motion yet)
                carried.append(frame.numpy())
            got, *carried = run({"frame": frame.numpy(), **dict(zip(names, carried))})
            worst = max(worst, float(np.abs(ref - got).max()))
        checks.append({"input": f"{frames} streamed frames {(b, *fshape)}", "max_abs_diff": worst})
    return checks


def stream_logits(model: CNNLSTM, run: Runner, clips: torch.Tensor, batch: int = 8) -> np.ndarray:
    """Stream ``clips`` ``(N, T, ...)`` frame by frame through a step graph, the state carried by its outputs:
    each frame's logits ``(N, T, classes)``."""
    names = step_names(model)[0][1:]  # h[, c][, previous]
    t_axis = model.layout.value.index("T")
    out = []
    for i in range(0, len(clips), batch):
        part = clips[i : i + batch].numpy()
        carried = [np.zeros(shape, np.float32) for shape in state_shapes(model, len(part))]
        logits = []
        for t in range(part.shape[t_axis]):
            frame = np.ascontiguousarray(np.take(part, t, axis=t_axis))  # (B, C, H, W) in the frame layout
            if t == 0 and "previous" in names:
                carried.append(frame)
            got, *carried = run({"frame": frame, **dict(zip(names, carried))})
            logits.append(got)
        out.append(np.stack(logits, 1))  # (B, T, classes)
    return np.concatenate(out)


def _agreement(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    return {
        "top1_agreement_with_fp32": float((ref.argmax(-1) == got.argmax(-1)).mean()),
        "max_abs_diff_vs_fp32": float(np.abs(ref - got).max()),
    }


def agree_clip(ref: Runner, got: Runner, clips: torch.Tensor, batch: int = 8) -> dict[str, Any]:
    """How a quantized clip graph ``got`` agrees with its float32 twin ``ref`` on ``clips`` ``(N, T, ...)``: the
    share of clips with the same top-1 class, and the largest difference of the logits."""
    runs = [
        np.concatenate([run({"clip": clips[i : i + batch].numpy()})[0] for i in range(0, len(clips), batch)])
        for run in (ref, got)
    ]
    return _agreement(*runs)


def agree_step(model: CNNLSTM, ref: Runner, got: Runner, clips: torch.Tensor) -> dict[str, Any]:
    """How a quantized step graph ``got`` agrees with its float32 twin ``ref`` on ``clips`` streamed frame by
    frame, each carrying its own state: the share of streamed frames with the same top-1 class, the largest
    difference of the logits."""
    return _agreement(stream_logits(model, ref, clips), stream_logits(model, got, clips))
