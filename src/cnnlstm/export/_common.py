"""What every export shares: the report, example inputs in the model's layout, and a quiet exporter."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import layout as L
from ..errors import require

__all__ = [
    "ExportReport",
    "artifact_bytes",
    "clip_shape",
    "frame_shape",
    "lengths_to_check",
    "own_length",
    "quiet",
    "random_state",
    "state_shapes",
    "step_example",
    "step_names",
]


@dataclass
class ExportReport:
    """What an export wrote and how closely it matches PyTorch (float32), or its float32 twin (int8).

    ``kind`` is ``"FORMAT KIND"``: ``onnx``, ``openvino`` or ``torchscript``, then ``clip`` or ``step``. A float32
    check is ``{"input", "max_abs_diff"}`` (to PyTorch); an int8 check ``{"input", "top1_agreement_with_fp32",
    "max_abs_diff_vs_fp32"}``.
    """

    path: Path
    kind: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    precision: str = "fp32"

    @property
    def max_abs_diff(self) -> float:
        return max((c["max_abs_diff"] for c in self.checks if "max_abs_diff" in c), default=float("nan"))

    @property
    def size_bytes(self) -> int:
        return artifact_bytes(self.path)

    def __str__(self) -> str:
        precision = "" if self.precision == "fp32" else f" {self.precision}"
        lines = [f"{self.kind}{precision} -> {self.path} ({self.size_bytes / 1e6:.2f} MB)"]
        fmt = self.kind.split()[0]
        for c in self.checks:
            if "max_abs_diff" in c:
                lines.append(f"  {c['input']}: max |{fmt} - torch| = {c['max_abs_diff']:.2e}")
            else:
                lines.append(
                    f"  {c['input']}: top-1 agreement with float32 {c['top1_agreement_with_fp32']:.3f}, "
                    f"max |{self.precision} - float32| = {c['max_abs_diff_vs_fp32']:.2e}"
                )
        return "\n".join(lines)


def artifact_bytes(path: Path) -> int:
    """The size of an artifact on disk: an OpenVINO IR is its ``.xml`` and the ``.bin`` of its weights."""
    weights = path.with_suffix(".bin")
    return path.stat().st_size + (weights.stat().st_size if path.suffix == ".xml" and weights.is_file() else 0)


def clip_shape(model: nn.Module, n: int, t: int) -> tuple[int, ...]:
    """A full input shape in the model's layout with batch ``n`` and ``t`` steps."""
    sample = list(model.config.input_shape)
    axes = model.layout.value[1:]
    if "T" in axes:
        sample[axes.index("T")] = t
    return (n, *sample)


def frame_shape(model: nn.Module) -> list[int]:
    """One frame's shape without the batch, in the model's frame layout: ``(C, H, W)``, ``(H, W, C)`` or ``(F,)``."""
    return [s for a, s in zip(model.layout.value[1:], model.config.input_shape) if a != "T"]


def own_length(model: nn.Module) -> int:
    """The clip length an export traces at: the model's own, 8 where any length goes."""
    return L.canonical_shape(model.config.input_shape, model.layout)[0] or 8


def lengths_to_check(model: nn.Module) -> list[int]:
    """Clip lengths an export is verified at: half, the model's own (8 where any), and about twice; only its own for a
    model that takes one length (a dimension-shuffled RNN arm)."""
    t = own_length(model)
    if getattr(model, "fixed_steps", None) is not None:
        return [t]
    return sorted({max(1, t // 2), t, t * 2 - 1})


def state_shapes(model: nn.Module, n: int) -> list[tuple[int, ...]]:
    """The shapes of a stream's RNN state for ``n`` streams: ``[h]`` or ``[h, c]``, each ``(layers, N, D)``;
    a ConvLSTM's ``[h, c]`` are maps, each ``(layers, N, D, H', W')`` for the model's own frame size."""
    if getattr(model.rnn, "reads_maps", False):
        h, w = model.feature_shape[-2:]  # the backbone's maps for one frame: (T, C', H', W')
        return [model.rnn.state_shape(n, h, w)] * 2
    rnn = model.rnn.rnn
    return [(rnn.num_layers, n, rnn.hidden_size)] * (2 if isinstance(rnn, nn.LSTM) else 1)


def random_state(model: nn.Module, n: int) -> list[torch.Tensor]:
    """A random RNN state for ``n`` streams (:func:`state_shapes`)."""
    return [torch.randn(shape) * 0.5 for shape in state_shapes(model, n)]


def step_names(model: nn.Module) -> tuple[list[str], list[str]]:
    """The streaming step graph's input and output names: ``frame, h[, c][, previous]`` →
    ``logits, h_out[, c_out][, previous_out]`` (``previous``: the stream's last frame, for motion input)."""
    carried = ["h", "c"][: len(state_shapes(model, 1))] + (["previous"] if model.config.motion != "none" else [])
    return ["frame", *carried], ["logits", *(f"{name}_out" for name in carried)]


def step_example(model: nn.Module, n: int) -> list[torch.Tensor]:
    """Random inputs of the step graph for ``n`` streams, in :func:`step_names`' order."""
    frame = [torch.randn(n, *frame_shape(model))]
    previous = [torch.randn(n, *frame_shape(model))] if model.config.motion != "none" else []
    return [*frame, *random_state(model, n), *previous]


def quiet() -> contextlib.ExitStack:
    """The exporter prints its progress and warns about deprecations: keep that out of the user's terminal."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    stack.callback(onnx_log.setLevel, level)
    return stack


def session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session that logs errors only, on ``threads`` threads (None: onnxruntime's default)."""
    ort = require("onnxruntime", "export", "ONNX verification")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
