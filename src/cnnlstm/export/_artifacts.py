"""export.json's artifacts: each exported file, its runtime, precision, inputs and outputs, and the checks it passed;
and how the streaming step graph carries a stream's state."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._common import ExportReport, clip_shape, own_length, quiet, session, step_example, step_names
from .verify import OV_CONFIG, runner

if TYPE_CHECKING:
    from ..model import CNNLSTM

__all__ = ["RUNTIMES", "artifacts", "streaming"]

RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino", "torchscript": "torchscript"}
_ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64"}
IO = list[dict[str, Any]]


def artifacts(
    model: CNNLSTM, folder: Path, reports: Sequence[ExportReport], tol: float, calibration: str | None = None
) -> list[dict[str, Any]]:
    """One entry per report: the float32 graphs' checks against PyTorch with the tolerance they passed, the int8
    graphs' agreement with float32 and what they were calibrated on."""
    entries = []
    for rep in reports:
        entry = _artifact(model, rep, folder)
        if rep.precision == "fp32":
            for check in entry["checks"]:
                check["tolerance"] = tol  # passed: max_abs_diff <= tolerance
        elif calibration:
            streamed = " streamed through the float32 step, the state carried from frame to frame"
            entry["calibration"] = calibration + {
                "step": streamed,
                "stream": streamed + " (the int8 step's quantization, its state held in OpenVINO)",
            }.get(rep.kind.split()[1], "")
        entries.append(entry)
    return entries


def _artifact(model: CNNLSTM, rep: ExportReport, folder: Path) -> dict[str, Any]:
    """One entry of ``export.json``: what the file is, what goes in and out, what it was checked against."""
    fmt, kind = rep.kind.split()
    if fmt == "onnx":
        inputs, outputs = _onnx_io(rep.path)
    else:
        inputs, outputs = _probed_io(model, kind, _caller(fmt, rep.path, model, kind))
    entry: dict[str, Any] = {
        "path": rep.path.relative_to(folder).as_posix(),
        "runtime": RUNTIMES[fmt],
        "precision": rep.precision,
        "kind": kind,
        "inputs": inputs,
        "outputs": outputs,
    }
    if fmt == "openvino":
        entry["weights"] = rep.path.with_suffix(".bin").relative_to(folder).as_posix()
        entry["compile"] = dict(OV_CONFIG)  # the checks ran so: OpenVINO's CPU default may compute in bfloat16
    if kind == "stream":
        entry["state"] = _stateful(model)
    entry["checks"] = [dict(c) for c in rep.checks]  # float32: max |runtime - PyTorch|; int8: against float32
    return entry


def _onnx_io(path: Path) -> tuple[IO, IO]:
    """The graph's own inputs and outputs as onnxruntime reads them: dynamic axes by name (``N``, ``T``)."""
    sess = session(path)

    def describe(args) -> IO:
        return [{"name": a.name, "shape": list(a.shape), "dtype": _ORT_TYPES.get(a.type, a.type)} for a in args]

    return describe(sess.get_inputs()), describe(sess.get_outputs())


def _caller(fmt: str, path: Path, model: CNNLSTM, kind: str) -> Callable[[list[torch.Tensor]], list[Any]]:
    """Positional inputs → outputs, for a TorchScript file or an OpenVINO IR."""
    if fmt == "torchscript":
        with quiet():  # torch.jit.load warns that it is deprecated
            loaded = torch.jit.load(str(path))

        def call(ins: list[torch.Tensor]) -> list[Any]:
            outs = loaded(*ins)
            return list(outs) if isinstance(outs, (tuple, list)) else [outs]

        return call
    names = {"clip": ["clip"], "stream": ["frame"]}.get(kind) or step_names(model)[0]
    if kind == "stream":  # a stateful model: each probe in a fresh request, its state at a fresh stream's
        return lambda ins: runner(path)({name: x.numpy() for name, x in zip(names, ins)})
    run = runner(path)
    return lambda ins: run({name: x.numpy() for name, x in zip(names, ins)})


@torch.inference_mode()
def _probed_io(model: CNNLSTM, kind: str, call: Callable[[list[torch.Tensor]], list[Any]]) -> tuple[IO, IO]:
    """A graph's inputs and outputs (positional, named as in ONNX): the shapes of two small runs, an axis that
    follows the batch named ``N``, one that follows the clip length ``T``."""
    t = own_length(model)
    t2 = t if getattr(model, "fixed_steps", None) is not None else t + 2  # a model that takes one T: a static axis
    runs = [(1, t), (2, t2)]  # (N, T): the two pairs differ, so an axis's pair of sizes names it
    axes = {(1, 2): "N", (t, t2): "T"}
    names = {"clip": (["clip"], ["logits"]), "stream": (["frame"], ["logits"])}.get(kind) or step_names(model)
    shapes: list[list[list[tuple[int, ...]]]] = []  # run -> [inputs, outputs] -> shapes
    for n, steps in runs:
        ins = [torch.randn(clip_shape(model, n, steps))] if kind == "clip" else step_example(model, n)
        ins = ins[: len(names[0])]  # a stateful stream takes the frame only
        outs = call(ins)
        shapes.append([[tuple(x.shape) for x in ins], [tuple(np.shape(x)) for x in outs]])

    def describe(which: int) -> IO:
        return [
            {
                "name": name,
                "shape": [a if a == b else axes.get((a, b)) for a, b in zip(sa, sb)],
                "dtype": "float32",
            }
            for name, sa, sb in zip(names[which], shapes[0][which], shapes[1][which])
        ]

    return describe(0), describe(1)


def _stateful(model: CNNLSTM) -> dict[str, Any]:
    """How the stateful stream keeps its state (:mod:`.ov_stream`)."""
    carried = step_names(model)[0][1:]
    return {
        "variables": carried + (["started"] if "previous" in carried else []),
        "held": "in the OpenVINO infer request, from call to call: feed one frame per call, read its logits",
        "reset": "InferRequest.reset_state() starts every stream over (h and c zeros); the batch N may change "
        "only after a reset",
        "reset_one": "to start some streams over while the others go on, set their rows of every variable to zeros "
        "(InferRequest.query_state(): h and c on axis 1, previous and started on axis 0)",
    }


def streaming(model: CNNLSTM) -> dict[str, Any]:
    """How the step graph carries a stream: feed each ``*_out`` back as its input on the next frame."""
    ins, outs = step_names(model)
    carry = dict(zip(outs[1:], ins[1:]))
    d: dict[str, Any] = {
        "inputs": ins,
        "outputs": outs,
        "carry": carry,
        "frame": "one frame of the stream, preprocessed as one frame of a clip (preprocessing.json), in the "
        "layout without T, N streams at once",
        "start": "a new stream starts with "
        + " and ".join(n for n in ins[1:] if n != "previous")
        + " all zeros (their shapes in the step artifact's inputs)",
        "logits": "after each frame: this frame's logits, as the clip graph gives them for it"
        if model.head.per_step
        else "after each frame: the clip logits of the stream's frames so far, as the clip graph gives them",
    }
    if "previous" in ins:
        d["start"] += "; previous = the stream's first frame itself (no motion yet)"
    d["restart"] = "to start some streams over while the others go on: their rows of h and c zeros (axis 1)" + (
        ", and their previous their next frame itself" if "previous" in ins else ""
    )
    return d
