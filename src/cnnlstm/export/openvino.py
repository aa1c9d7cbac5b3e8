"""Export to OpenVINO IR (``.xml`` + ``.bin``), from the verified ONNX graph, verified against PyTorch in OpenVINO.

The IR is read from the ONNX file by OpenVINO's ONNX frontend, the one ``openvino.convert_model`` uses for an ONNX
file, through ``openvino.Core.read_model``: ``convert_model`` also starts OpenVINO's usage telemetry, which sends to
the network unless the user opted out, and an export runs offline. The weights are saved in float32 (not the
float16 that ``openvino.save_model`` writes by default), and the checks compile the IR with float32 compute
(:data:`~.verify.OV_CONFIG`): OpenVINO's CPU plugin computes in bfloat16 where the processor has it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, ExportError, require
from ._common import ExportReport
from .verify import check_clip, check_step, runner

if TYPE_CHECKING:
    from ..model import CNNLSTM

__all__ = ["export_openvino", "onnx_to_openvino"]


def export_openvino(
    model: CNNLSTM,
    path: str | Path,
    *,
    kind: str = "clip",
    onnx: str | Path | None = None,
    verify: bool = True,
    tol: float = 1e-4,
    batches: tuple[int, ...] = (1, 7),
) -> ExportReport:
    """Export a model to OpenVINO IR with dynamic batch (and time) axes, verified in OpenVINO against PyTorch.

    Args:
        model: the model (exported in eval mode).
        path: the ``.xml`` file to write (its weights go to the ``.bin`` beside it).
        kind: ``"clip"`` (input ``clip`` ``(N, T, ...)``, output ``logits``) or ``"step"`` (inputs ``frame, h[, c]
            [, previous]``, outputs ``logits, h_out[, c_out][, previous_out]``), as :func:`~.onnx.export_onnx`.
        onnx: the model's ONNX graph of this kind, already exported and verified; None: exported (and verified)
            here into a temporary folder.
        verify: compare with PyTorch on fresh random inputs: each batch size in ``batches`` at three clip lengths
            (clip), or a 6-step stream (step).
        tol: the largest absolute difference allowed.

    Returns:
        An :class:`ExportReport` (``kind`` ``"openvino clip"`` or ``"openvino step"``).

    Raises:
        MissingDependencyError: openvino is not installed (``pip install 'cnnlstm[edge]'``).
        ExportError: verification failed (the files stay, for inspection), or the conversion failed.

    >>> import cnnlstm as cl, tempfile
    >>> model = cl.CNNLSTM(input_shape=(4, 3, 32, 32), hidden_size=8, backbone_options={"channels": (4,)})
    >>> cl.export_openvino(model, tempfile.mkdtemp() + "/model.xml").max_abs_diff < 1e-4  # doctest: +SKIP
    True
    """
    require("openvino", "edge", "OpenVINO export")
    path = Path(path)
    if path.suffix != ".xml":
        raise ConfigError(f"an OpenVINO IR is an .xml file (and a .bin beside it): got {path.name!r}")
    if kind not in ("clip", "step"):
        raise ConfigError(f"unknown export kind {kind!r}: expected 'clip' or 'step'")
    model = model.eval()
    with model.autocast("32"):  # the float32 graph, whatever autocast the caller runs in
        with tempfile.TemporaryDirectory() as tmp:
            if onnx is None:
                from .onnx import export_onnx

                onnx = export_onnx(model, Path(tmp) / f"{kind}.onnx", kind=kind, tol=tol, batches=batches).path
            onnx_to_openvino(onnx, path)
        report = ExportReport(path, f"openvino {kind}")
        if verify:
            run = runner(path)
            report.checks = check_clip(model, run, path, batches) if kind == "clip" else check_step(model, run, batches)
            if not report.max_abs_diff <= tol:
                raise ExportError(
                    f"{path}: the OpenVINO {kind} graph differs from PyTorch by {report.max_abs_diff:.2e} "
                    f"(> {tol:.0e}):\n{report}"
                )
        return report


def onnx_to_openvino(src: str | Path, dst: str | Path) -> Path:
    """Convert an ONNX file to OpenVINO IR ``dst`` (``.xml``, weights in the ``.bin`` beside it, float32)."""
    ov = require("openvino", "edge", "OpenVINO export")
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        ov_model = ov.Core().read_model(str(src))
        ov.save_model(ov_model, str(dst), compress_to_fp16=False)
    except Exception as e:  # OpenVINO's own error types
        raise ExportError(f"OpenVINO could not convert {src}: {type(e).__name__}: {str(e)[:500]}") from None
    return dst
