"""Export to ONNX (whole clip and streaming step) and TorchScript, verified against PyTorch; int8.

Every export is checked on fresh random inputs with onnxruntime (or the TorchScript module):
the largest absolute difference to PyTorch is reported, and above ``tol`` it is an error.

>>> import cnnlstm as cl                                                       # doctest: +SKIP
>>> report = cl.export_onnx(model, "model.onnx")                               # doctest: +SKIP
>>> report.max_abs_diff < 1e-4                                                 # doctest: +SKIP
True
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from . import layout as L
from .errors import ConfigError, ExportError, require
from .streaming import _FRAME_LAYOUT, check_streamable

if TYPE_CHECKING:
    from .model import CNNLSTM

__all__ = ["ExportReport", "StepGraph", "export_onnx", "export_torchscript", "quantize_onnx"]


@dataclass
class ExportReport:
    """What an export wrote and how closely it matches PyTorch."""

    path: Path
    kind: str
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return max((c["max_abs_diff"] for c in self.checks), default=float("nan"))

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def __str__(self) -> str:
        lines = [f"{self.kind} -> {self.path} ({self.size_bytes / 1e6:.2f} MB)"]
        fmt = self.kind.split()[0]
        lines += [f"  {c['input']}: max |{fmt} - torch| = {c['max_abs_diff']:.2e}" for c in self.checks]
        return "\n".join(lines)


class StepGraph(nn.Module):
    """One streaming step as a pure function: ``(frame, h[, c]) → (logits, h[, c])``.

    Shapes: frame ``(N, C, H, W)`` in the model's frame layout (``(N, H, W, C)`` for ``NTHWC``);
    h, c ``(layers, N, D)``; logits ``(N, classes)``.
    """

    def __init__(self, model: CNNLSTM):
        super().__init__()
        check_streamable(model)
        if model.kind != "clip":
            raise ConfigError("the streaming-step export is for clip models (frames); export series models whole")
        self.cnn = model.backbone.module
        self.bridge = model.bridge
        self.rnn = model.rnn.rnn
        self.head = model.head
        self.channels_last = _FRAME_LAYOUT[model.layout.value] == "NHWC"
        self.lstm = isinstance(self.rnn, nn.LSTM)

    def forward(self, frame: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None):
        if self.channels_last:
            frame = frame.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        seq = self.bridge(self.cnn(frame).unsqueeze(1))  # (N, 1, F)
        if self.lstm:
            out, (h, c) = self.rnn(seq, (h, c))  # (N, 1, D)
        else:
            out, h = self.rnn(seq, h)
        logits = self.head(out)  # (N, classes) | (N, 1, classes)
        if logits.dim() == 3:
            logits = logits[:, 0]
        return (logits, h, c) if self.lstm else (logits, h)


def _clip_shape(model: CNNLSTM, n: int, t: int) -> tuple[int, ...]:
    """A full input shape in the model's layout with batch ``n`` and ``t`` steps."""
    sample = list(model.config.input_shape)
    axes = model.layout.value[1:]
    if "T" in axes:
        sample[axes.index("T")] = t
    return (n, *sample)


def _lengths_to_check(model: CNNLSTM) -> list[int]:
    t = L.canonical_shape(model.config.input_shape, model.layout)[0]
    t = t or 8
    return sorted({max(1, t // 2), t, t * 2 - 1})


def _state(model: CNNLSTM, n: int) -> list[torch.Tensor]:
    rnn = model.rnn.rnn
    shape = (rnn.num_layers, n, rnn.hidden_size)
    return [torch.randn(shape) * 0.5 for _ in range(2 if isinstance(rnn, nn.LSTM) else 1)]


def _quiet():
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


def _in_float32(fn):
    """Export the float32 graph even from a model set to infer in bf16; the model's precision is kept."""

    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        before = getattr(model, "precision", "32")
        model.precision = "32"
        try:
            return fn(model, *args, **kwargs)
        finally:
            model.precision = before

    return wrapper


@_in_float32
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
            ``frame``, ``h`` (and ``c`` for an LSTM), outputs ``logits``, ``h_out`` (``c_out``).
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
    n = torch.export.Dim("N", min=1, max=4096)
    if kind == "clip":
        t = torch.export.Dim("T", min=1, max=1 << 16)
        x = torch.randn(_clip_shape(model, 2, _lengths_to_check(model)[1]))
        t_axis = model.layout.value.index("T") if "T" in model.layout.value else None
        dims = {0: n, **({t_axis: t} if t_axis is not None else {})}
        module, args, names, outs, shapes = model, (x,), ["clip"], ["logits"], ({**dims},)
    elif kind == "step":
        module = StepGraph(model).eval()
        frame_shape = [s for a, s in zip(model.layout.value[1:], model.config.input_shape) if a != "T"]
        state = _state(model, 2)
        args = (torch.randn(2, *frame_shape), *state)
        names = ["frame", "h"] + (["c"] if len(state) == 2 else [])
        outs = ["logits", "h_out"] + (["c_out"] if len(state) == 2 else [])
        shapes = ({0: n}, *({1: n} for _ in state))
    else:
        raise ConfigError(f"unknown export kind {kind!r}: expected 'clip' or 'step'")
    _clear_rnn_dispatch_caches()
    try:
        with _quiet():
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
    report = ExportReport(path, f"onnx {kind}")
    if verify:
        report.checks = _verify_clip(model, path, batches) if kind == "clip" else _verify_step(model, path, batches)
        if not report.max_abs_diff <= tol:
            raise ExportError(
                f"{path}: the ONNX {kind} graph differs from PyTorch by {report.max_abs_diff:.2e} "
                f"(> {tol:.0e}):\n{report}"
            )
    return report


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


def _session(path: Path):
    ort = require("onnxruntime", "export", "ONNX verification")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@torch.inference_mode()
def _verify_clip(model: CNNLSTM, path: Path, batches: tuple[int, ...]) -> list[dict[str, Any]]:
    sess = _session(path)
    checks = []
    for b in batches:
        for t in _lengths_to_check(model):
            x = torch.randn(_clip_shape(model, b, t))
            ref = model(x).numpy()
            try:
                got = sess.run(None, {"clip": x.numpy()})[0]
            except Exception as e:  # onnxruntime's own error types
                raise ExportError(
                    f"the exported graph {path} cannot run a clip {tuple(x.shape)} that the model runs: "
                    f"{str(e).splitlines()[0][:300]}"
                ) from None
            checks.append({"input": f"clip {tuple(x.shape)}", "max_abs_diff": float(np.abs(ref - got).max())})
    return checks


@torch.inference_mode()
def _verify_step(model: CNNLSTM, path: Path, batches: tuple[int, ...]) -> list[dict[str, Any]]:
    sess = _session(path)
    frame_shape = [s for a, s in zip(model.layout.value[1:], model.config.input_shape) if a != "T"]
    checks = []
    for b in batches:
        streamer = model.stream()
        state = [
            np.zeros((model.rnn.rnn.num_layers, b, model.rnn.rnn.hidden_size), np.float32)
            for _ in range(2 if isinstance(model.rnn.rnn, nn.LSTM) else 1)
        ]
        worst = 0.0
        for _ in range(6):
            frame = torch.randn(b, *frame_shape)
            ref = streamer.step(frame).numpy()
            feeds = {"frame": frame.numpy(), "h": state[0], **({"c": state[1]} if len(state) == 2 else {})}
            got, *state = sess.run(None, feeds)
            worst = max(worst, float(np.abs(ref - got).max()))
        checks.append({"input": f"6 streamed frames {(b, *frame_shape)}", "max_abs_diff": worst})
    return checks


@_in_float32
def export_torchscript(
    model: CNNLSTM, path: str | Path, *, kind: str = "clip", verify: bool = True, tol: float = 1e-4
) -> ExportReport:
    """Export by tracing to TorchScript (``torch.jit.load`` runs it without cnnlstm), verified the same way."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with _quiet(), torch.no_grad():
        if kind == "clip":
            example = torch.randn(_clip_shape(model, 2, _lengths_to_check(model)[1]))
            traced = torch.jit.trace(model, (example,), check_trace=False)
        elif kind == "step":
            step = StepGraph(model).eval()
            frame_shape = [s for a, s in zip(model.layout.value[1:], model.config.input_shape) if a != "T"]
            traced = torch.jit.trace(step, (torch.randn(2, *frame_shape), *_state(model, 2)), check_trace=False)
        else:
            raise ConfigError(f"unknown export kind {kind!r}: expected 'clip' or 'step'")
        traced.save(str(path))
    report = ExportReport(path, f"torchscript {kind}")
    if verify:
        loaded = torch.jit.load(str(path))
        with torch.inference_mode():
            for b in (1, 7):
                if kind == "clip":
                    for t in _lengths_to_check(model):
                        x = torch.randn(_clip_shape(model, b, t))
                        diff = float((loaded(x) - model(x)).abs().max())
                        report.checks.append({"input": f"clip {tuple(x.shape)}", "max_abs_diff": diff})
                else:
                    frame = torch.randn(b, *frame_shape)
                    state = _state(model, b)
                    diff = max(float((a - r).abs().max()) for a, r in zip(loaded(frame, *state), step(frame, *state)))
                    report.checks.append({"input": f"step {tuple(frame.shape)}", "max_abs_diff": diff})
        if not report.max_abs_diff <= tol:
            raise ExportError(f"{path}: TorchScript differs from PyTorch by {report.max_abs_diff:.2e}:\n{report}")
    return report


def quantize_onnx(src: str | Path, dst: str | Path, conv: bool = True) -> Path:
    """Dynamic int8 quantization (weights int8, activations quantized at run time) of an ONNX file.

    LSTM/GRU, MatMul and Gemm are quantized; with ``conv`` the convolutions too (ConvInteger).
    The graph is pre-processed first (shape inference, fusions), as onnxruntime recommends.
    """
    q = require("onnxruntime.quantization", "export", "int8 quantization")
    ops = ["LSTM", "GRU", "MatMul", "Gemm"] + (["Conv"] if conv else [])
    dst = Path(dst)
    pre = dst.with_suffix(".pre.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs its advice on the root logger
    try:
        with _quiet():
            try:
                q.quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
                source = pre
            except Exception:  # pre-processing is an optimisation: quantize the original
                source = Path(src)
            q.quantize_dynamic(
                str(source),
                str(dst),
                weight_type=q.QuantType.QUInt8 if conv else q.QuantType.QInt8,
                op_types_to_quantize=ops,
            )
    finally:
        root.setLevel(level)
        pre.unlink(missing_ok=True)
    return dst


def latency_ms(path: str | Path, feeds: dict[str, np.ndarray], repeats: int = 20) -> float:
    """Median milliseconds of one onnxruntime call."""
    sess = _session(Path(path))
    sess.run(None, feeds)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def int8_report(
    model: CNNLSTM, fp32_clip: Path, fp32_step: Path | None, clips: torch.Tensor, out_dir: Path, conv: bool = True
) -> dict[str, Any]:
    """Quantize the exported graphs to int8 and compare them with float32.

    Args:
        model: the model the graphs came from.
        fp32_clip, fp32_step: the float32 ONNX files (the step graph may be None).
        clips: a sample of clips ``(N, T, ...)`` in the model's layout for the top-1 agreement
            (real clips where there are some; random ones say little).
        out_dir: where ``*.int8.onnx`` go.
        conv: quantize the convolutions too.

    Returns:
        Sizes on disk, latency per clip and per streamed frame (median ms, batch 1), and the
        share of the sample on which int8 and float32 agree on the top-1 class.
    """
    q_clip = quantize_onnx(fp32_clip, out_dir / (fp32_clip.stem + ".int8.onnx"), conv)
    one = {"clip": clips[:1].numpy()}
    report: dict[str, Any] = {
        "clip_mb": {"fp32": fp32_clip.stat().st_size / 1e6, "int8": q_clip.stat().st_size / 1e6},
        "clip_ms": {"fp32": latency_ms(fp32_clip, one), "int8": latency_ms(q_clip, one)},
    }
    a = _session(fp32_clip).run(None, {"clip": clips.numpy()})[0].argmax(-1)
    b = _session(q_clip).run(None, {"clip": clips.numpy()})[0].argmax(-1)
    report["top1_agreement"] = float((a == b).mean())
    report["sample_clips"] = len(clips)
    if fp32_step is not None:
        q_step = quantize_onnx(fp32_step, out_dir / (fp32_step.stem + ".int8.onnx"), conv)
        frame_shape = [s for ax, s in zip(model.layout.value[1:], model.config.input_shape) if ax != "T"]
        feeds = {"frame": np.random.default_rng(0).standard_normal((1, *frame_shape)).astype(np.float32)}
        feeds.update({k: v.numpy() for k, v in zip(("h", "c"), _state(model, 1))})
        report["step_mb"] = {"fp32": fp32_step.stat().st_size / 1e6, "int8": q_step.stat().st_size / 1e6}
        report["frame_ms"] = {"fp32": latency_ms(fp32_step, feeds), "int8": latency_ms(q_step, feeds)}
    return report
