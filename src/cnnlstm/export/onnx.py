"""Export to ONNX (the whole clip, or one streaming step), verified against PyTorch with onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import ConfigError, ExportError, require
from ._common import ExportReport, clip_shape, own_length, quiet, step_example, step_names
from .step import step_graph
from .verify import check_clip, check_step, runner

if TYPE_CHECKING:
    from ..model import CNNLSTM

__all__ = ["export_onnx"]

# the largest batch and clip length the exported graph declares it takes (its dynamic axes' bounds)
MAX_BATCH, MAX_STEPS = 4096, 1 << 16


def export_onnx(
    model: CNNLSTM,
    path: str | Path,
    *,
    kind: str = "clip",
    verify: bool = True,
    tol: float = 1e-4,
    opset: int = 18,
    batches: tuple[int, ...] = (1, 7),
) -> ExportReport:
    """Export a model to ONNX with dynamic batch (and time) axes, verified with onnxruntime.

    Args:
        model: the model (exported in eval mode).
        path: the ``.onnx`` file to write.
        kind: ``"clip"``: the whole-clip model, input ``clip`` ``(N, T, ...)`` in the model's layout,
            output ``logits``; ``"step"``: one streaming step (:class:`StepGraph`), inputs
            ``frame``, ``h`` (and ``c`` for an LSTM or a ConvLSTM, whose states are maps
            ``(layers, N, D, H', W')``; ``previous``, the last frame, for motion input), outputs ``logits``,
            ``h_out`` (``c_out``, ``previous_out``). A ConvLSTM's clip graph
            runs its steps in an ONNX ``Scan``, so ``T`` stays dynamic as an LSTM's does.
        verify: compare with PyTorch on fresh random inputs: each batch size in ``batches`` at three
            clip lengths (clip), or a 6-step stream (step).
        tol: the largest absolute difference allowed.
        opset: ONNX opset.

    Returns:
        An :class:`ExportReport`.

    Raises:
        ExportError: verification failed (the file stays, for inspection), or the export failed.
    """
    require("onnx", "export", "ONNX export")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with model.autocast("32"):  # the float32 graph, whatever autocast the caller runs in
        module, args, names, outs, shapes = _graph(model, kind)
        _write(module, args, path, names, outs, shapes, opset, kind)
        report = ExportReport(path, f"onnx {kind}")
        if verify:
            report.checks = _verify_clip(model, path, batches) if kind == "clip" else _verify_step(model, path, batches)
            if not report.max_abs_diff <= tol:
                raise ExportError(
                    f"{path}: the ONNX {kind} graph differs from PyTorch by {report.max_abs_diff:.2e} "
                    f"(> {tol:.0e}):\n{report}"
                )
        return report


def _write(module: nn.Module, args: tuple, path: Path, names, outs, shapes, opset: int, kind: str) -> None:
    """``torch.onnx.export`` through the dynamo exporter into one self-contained file; its failure as one error."""
    _clear_rnn_dispatch_caches()
    try:
        # no_grad: the graph infers; a ConvLSTM's scan would otherwise go through its autograd form, which
        # the exporter's passes cannot decompose
        with quiet(), torch.no_grad():
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=True,
                input_names=names,
                output_names=outs,
                dynamic_shapes=shapes,
                opset_version=opset,
                external_data=False,  # one self-contained file, as edge runtimes want it
            )
    except Exception as e:
        raise ExportError(f"ONNX export of the {kind} graph failed: {type(e).__name__}: {str(e)[:500]}") from None


def _graph(model: CNNLSTM, kind: str) -> tuple[nn.Module, tuple, list[str], list[str], tuple]:
    """What to export for ``kind``: the module, example inputs, input and output names, dynamic axes."""
    n = torch.export.Dim("N", min=1, max=MAX_BATCH)
    if kind == "clip":
        t = torch.export.Dim("T", min=1, max=MAX_STEPS)
        x = torch.randn(clip_shape(model, 2, own_length(model)))
        t_axis = model.layout.value.index("T") if "T" in model.layout.value else None
        if getattr(model, "fixed_steps", None) is not None:  # the RNN arm's input size is T: a static axis
            t_axis = None
        dims = {0: n, **({t_axis: t} if t_axis is not None else {})}
        return model, (x,), ["clip"], ["logits"], ({**dims},)
    if kind == "step":
        args = tuple(step_example(model, 2))  # frame, h[, c][, previous]
        names, outs = step_names(model)
        batch_axis = {"frame": 0, "previous": 0}  # a state's batch is its axis 1: (layers, N, ...)
        carried = tuple({batch_axis.get(name, 1): n} for name in names[1:])  # forward(frame, *carried)
        return step_graph(model), args, names, outs, ({0: n}, carried)
    raise ConfigError(f"unknown export kind {kind!r}: expected 'clip' or 'step'")


def _clear_rnn_dispatch_caches() -> None:
    """Work around stale dispatch caches in torch 2.13's ONNX exporter.

    The exporter swaps in a while-loop decomposition of LSTM/GRU (which keeps ``T`` dynamic)
    for the length of each export; the ops' dispatch caches keep the first export's choice,
    so a second export in the same process silently unrolls the RNN for the example's ``T``.
    """
    for op in (torch.ops.aten.lstm.input, torch.ops.aten.gru.input):
        cache = getattr(op, "_dispatch_cache", None)
        if isinstance(cache, dict):
            cache.clear()


def _verify_clip(model: CNNLSTM, path: Path, batches: tuple[int, ...]) -> list[dict[str, Any]]:
    return check_clip(model, runner(path), path, batches)


def _verify_step(model: CNNLSTM, path: Path, batches: tuple[int, ...]) -> list[dict[str, Any]]:
    return check_step(model, runner(path), batches)
