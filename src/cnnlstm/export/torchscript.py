"""Export to TorchScript by tracing (``torch.jit.load`` runs it without cnnlstm), verified against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import ConfigError, ExportError
from ._common import ExportReport, clip_shape, lengths_to_check, own_length, quiet, step_example
from .step import step_graph

if TYPE_CHECKING:
    from ..model import CNNLSTM

__all__ = ["export_torchscript"]


def export_torchscript(
    model: CNNLSTM, path: str | Path, *, kind: str = "clip", verify: bool = True, tol: float = 1e-4
) -> ExportReport:
    """Export by tracing to TorchScript (``torch.jit.load`` runs it without cnnlstm), verified the same way.

    Raises:
        ConfigError: the clip graph of a ConvLSTM model: tracing would unroll its loop over ``T`` for the
            example's length (its ONNX export keeps ``T`` dynamic; its step graph traces).
    """
    if kind == "clip" and getattr(model.rnn, "reads_maps", False):
        raise ConfigError(
            "a ConvLSTM model's clip graph does not trace to TorchScript: tracing would fix T to the example "
            "clip's length. Export it to ONNX (format 'onnx', T stays dynamic), or trace the streaming step "
            "(kind='step')"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with model.autocast("32"):  # the float32 graph, whatever autocast the caller runs in
        with quiet(), torch.no_grad():
            if kind == "clip":
                example = torch.randn(clip_shape(model, 2, own_length(model)))
                traced = torch.jit.trace(model, (example,), check_trace=False)
            elif kind == "step":
                step = step_graph(model)
                traced = torch.jit.trace(step, tuple(step_example(model, 2)), check_trace=False)
            else:
                raise ConfigError(f"unknown export kind {kind!r}: expected 'clip' or 'step'")
            traced.save(str(path))
        report = ExportReport(path, f"torchscript {kind}")
        if verify:
            loaded = torch.jit.load(str(path))
            with torch.inference_mode():
                for b in (1, 7):
                    if kind == "clip":
                        for t in lengths_to_check(model):
                            x = torch.randn(clip_shape(model, b, t))
                            diff = float((loaded(x) - model(x)).abs().max())
                            report.checks.append({"input": f"clip {tuple(x.shape)}", "max_abs_diff": diff})
                    else:
                        inputs = step_example(model, b)  # frame, h[, c][, previous]
                        diff = max(float((a - r).abs().max()) for a, r in zip(loaded(*inputs), step(*inputs)))
                        report.checks.append({"input": f"step {tuple(inputs[0].shape)}", "max_abs_diff": diff})
            if not report.max_abs_diff <= tol:
                raise ExportError(f"{path}: TorchScript differs from PyTorch by {report.max_abs_diff:.2e}:\n{report}")
        return report
