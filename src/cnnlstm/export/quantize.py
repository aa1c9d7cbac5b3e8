"""int8: static post-training quantization of exported graphs, calibrated on real clips, and its agreement with
float32.

- ONNX Runtime: QDQ format, weights int8 per output channel, activations uint8 with MinMax ranges from the
  calibration feeds (:func:`quantize_onnx_static`).
- OpenVINO: NNCF post-training quantization (``nncf.quantize``) of the IR on the same feeds (:func:`quantize_openvino`).
- The streaming step is calibrated on the inputs a stream gives it: frames and the state carried from step to
  step (:func:`~.calibrate.step_feeds`).

:func:`quantize_onnx` is the older dynamic quantization (activations quantized at run time), kept for comparisons:
on the reference model it is slower than float32.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import ExportError, require
from ._common import ExportReport, quiet
from .calibrate import CalibrationReader, clip_feeds, step_feeds
from .verify import agree_clip, agree_step, runner

if TYPE_CHECKING:
    from ..model import CNNLSTM

__all__ = ["int8_path", "latency_ms", "quantize_export", "quantize_onnx", "quantize_onnx_static", "quantize_openvino"]

Feeds = dict[str, np.ndarray]
# what NNCF leaves in float32: the recurrence and the matrix products (the RNN's, the head's). A state carried
# through fake-quantized inputs from step to step drifts (measured: agreement with float32 fell to 0.58 by the
# 100th streamed frame of the demo's model); the convolutions, which are the cost, are quantized.
OV_FLOAT_TYPES = ["LSTMSequence", "GRUSequence", "RNNSequence", "LSTMCell", "GRUCell", "RNNCell", "MatMul"]


def int8_path(fp32: Path, out_dir: Path) -> Path:
    """Where the int8 twin of the float32 graph ``fp32`` goes: ``OUT_DIR/STEM.int8.onnx`` (``.int8.xml``)."""
    return out_dir / f"{fp32.stem}.int8{fp32.suffix}"


@contextlib.contextmanager
def _preprocessed(src: Path, dst: Path) -> Iterator[Path]:
    """The ONNX graph pre-processed for quantization (shape inference, fusions), as onnxruntime recommends; the
    original where that fails (it is an optimisation). The quantizer's advice on the root logger is kept quiet."""
    q = require("onnxruntime.quantization", "export", "int8 quantization")
    pre = dst.with_suffix(".pre.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with quiet():
            try:
                q.quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
                source = pre
            except Exception:
                source = Path(src)
            yield source  # the quantizer runs here, quiet too
    finally:
        root.setLevel(level)
        pre.unlink(missing_ok=True)


def quantize_onnx(src: str | Path, dst: str | Path, conv: bool = True) -> Path:
    """Dynamic int8 quantization (weights int8, activations quantized at run time) of an ONNX file.

    LSTM/GRU, MatMul and Gemm are quantized; with ``conv`` the convolutions too (ConvInteger). For deployment
    prefer :func:`quantize_onnx_static`: dynamic quantization of convolutions is slower than float32 on CPUs.
    """
    q = require("onnxruntime.quantization", "export", "int8 quantization")
    ops = ["LSTM", "GRU", "MatMul", "Gemm"] + (["Conv"] if conv else [])
    dst = Path(dst)
    with _preprocessed(Path(src), dst) as source:
        weights = q.QuantType.QUInt8 if conv else q.QuantType.QInt8
        q.quantize_dynamic(str(source), str(dst), weight_type=weights, op_types_to_quantize=ops)
    return dst


def quantize_onnx_static(src: str | Path, dst: str | Path, feeds: Iterable[Feeds], per_channel: bool = True) -> Path:
    """Static int8 quantization of an ONNX file in QDQ format: weights int8 (per output channel with
    ``per_channel``), activations uint8 with ranges (MinMax) calibrated on ``feeds`` (input name → array,
    e.g. :func:`~.calibrate.clip_feeds` or :func:`~.calibrate.step_feeds`)."""
    q = require("onnxruntime.quantization", "export", "int8 quantization")
    dst = Path(dst)
    reader = CalibrationReader(feeds)
    with _preprocessed(Path(src), dst) as source:
        q.quantize_static(
            str(source),
            str(dst),
            reader,
            quant_format=q.QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
        )
    return dst


def _nncf():
    """NNCF, imported with its usage telemetry off (NNCF reads ``NNCF_CI`` once, at import; an export runs
    offline) and its log quiet but for errors; the environment is left as it was."""
    before = os.environ.get("NNCF_CI")
    os.environ["NNCF_CI"] = "1"
    try:
        nncf = require("nncf", "edge", "OpenVINO int8 quantization")
    finally:
        if before is None:
            del os.environ["NNCF_CI"]
        else:
            os.environ["NNCF_CI"] = before
    nncf.set_log_level(logging.ERROR)
    return nncf


def quantize_openvino(src: str | Path, dst: str | Path, feeds: Iterable[Feeds]) -> Path:
    """Static int8 quantization of an OpenVINO IR with NNCF (``nncf.quantize``: FakeQuantize on weights and
    activations, ranges from ``feeds``, every feed used), the recurrence and matrix products left in float32
    (:data:`OV_FLOAT_TYPES`). ``dst`` is an ``.xml``, its weights in the ``.bin``."""
    ov = require("openvino", "edge", "OpenVINO int8 quantization")
    nncf = _nncf()
    data = list(feeds)
    dst = Path(dst)
    try:
        with quiet():  # NNCF draws a progress bar
            quantized = nncf.quantize(
                ov.Core().read_model(str(src)),
                nncf.Dataset(data),
                subset_size=len(data),
                ignored_scope=nncf.IgnoredScope(types=OV_FLOAT_TYPES, validate=False),
            )
        ov.save_model(quantized, str(dst), compress_to_fp16=False)
    except Exception as e:  # NNCF's and OpenVINO's own error types
        raise ExportError(f"NNCF could not quantize {src}: {type(e).__name__}: {str(e)[:500]}") from None
    return dst


def quantize_export(
    model: CNNLSTM,
    fp32: ExportReport,
    calibration: torch.Tensor,
    clips: torch.Tensor,
    out_dir: str | Path,
    sample: str = "",
) -> ExportReport:
    """The int8 twin of a verified float32 export, calibrated on ``calibration`` and checked on ``clips``.

    Args:
        model: the model the graph came from.
        fp32: the float32 export (an ONNX file: ONNX Runtime QDQ; an OpenVINO IR: NNCF), clip or step graph.
        calibration: clips ``(N, T, ...)`` in the model's layout: the clip graph is calibrated on them, the step
            graph on them streamed through the float32 step (:func:`~.calibrate.step_feeds`).
        clips: other clips ``(N, T, ...)``, not used in calibration, for the top-1 agreement with float32 (clip
            graph: per clip; step graph: per streamed frame).
        out_dir: where ``STEM.int8.onnx`` (``.int8.xml`` and ``.bin``) goes.
        sample: what ``clips`` are, in a few words (``"real"``), for the check's name.

    Returns:
        An :class:`ExportReport` of precision ``int8`` whose check holds the agreement and the largest
        difference of the logits to float32's.
    """
    kind = fp32.kind.split()[1]
    dst = int8_path(fp32.path, Path(out_dir))
    feeds = clip_feeds(calibration) if kind == "clip" else step_feeds(model, calibration)
    if fp32.path.suffix == ".xml":
        quantize_openvino(fp32.path, dst, feeds)
    else:
        quantize_onnx_static(fp32.path, dst, feeds)
    ref, got = runner(fp32.path), runner(dst)
    what = " ".join(w for w in (str(len(clips)), sample, "clips not used in calibration") if w)
    check = {"input": what + (", streamed" if kind == "step" else "")}
    check.update(agree_clip(ref, got, clips) if kind == "clip" else agree_step(model, ref, got, clips))
    return ExportReport(dst, fp32.kind, [check], precision="int8")


def latency_ms(path: str | Path, feeds: Feeds, repeats: int = 20) -> float:
    """Median milliseconds of one call of the graph at ``path`` (ONNX Runtime or OpenVINO, :func:`~.verify.runner`)."""
    run = runner(Path(path))
    run(feeds)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))
