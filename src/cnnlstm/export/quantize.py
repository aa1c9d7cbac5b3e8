"""int8: dynamic quantization of exported ONNX graphs, their size, latency and agreement with float32."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import require
from ._common import quiet, session, step_example, step_names

if TYPE_CHECKING:
    from ..model import CNNLSTM

__all__ = ["int8_path", "int8_report", "latency_ms", "quantize_onnx"]


def int8_path(fp32: Path, out_dir: Path) -> Path:
    """Where :func:`int8_report` writes the int8 twin of the float32 graph ``fp32``: ``OUT_DIR/STEM.int8.onnx``."""
    return out_dir / (fp32.stem + ".int8.onnx")


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
        with quiet():
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
    sess = session(Path(path))
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
    q_clip = quantize_onnx(fp32_clip, int8_path(fp32_clip, out_dir), conv)
    one = {"clip": clips[:1].numpy()}
    report: dict[str, Any] = {
        "clip_mb": {"fp32": fp32_clip.stat().st_size / 1e6, "int8": q_clip.stat().st_size / 1e6},
        "clip_ms": {"fp32": latency_ms(fp32_clip, one), "int8": latency_ms(q_clip, one)},
    }
    a = session(fp32_clip).run(None, {"clip": clips.numpy()})[0].argmax(-1)
    b = session(q_clip).run(None, {"clip": clips.numpy()})[0].argmax(-1)
    report["top1_agreement"] = float((a == b).mean())
    report["sample_clips"] = len(clips)
    if fp32_step is not None:
        q_step = quantize_onnx(fp32_step, int8_path(fp32_step, out_dir), conv)
        feeds = {name: t.numpy() for name, t in zip(step_names(model)[0], step_example(model, 1))}
        report["step_mb"] = {"fp32": fp32_step.stat().st_size / 1e6, "int8": q_step.stat().st_size / 1e6}
        report["frame_ms"] = {"fp32": latency_ms(fp32_step, feeds), "int8": latency_ms(q_step, feeds)}
    return report
