"""Export to ONNX (whole clip and streaming step), OpenVINO IR and TorchScript, verified against PyTorch; static int8.

Every export is checked on fresh random inputs in its runtime (onnxruntime, OpenVINO, the TorchScript module):
the largest absolute difference to PyTorch is reported, and above ``tol`` it is an error.

>>> import cnnlstm as cl, tempfile
>>> model = cl.CNNLSTM(input_shape=(4, 3, 32, 32), hidden_size=8, num_classes=3, backbone_options={"channels": (4,)})
>>> report = cl.export_onnx(model, tempfile.mkdtemp() + "/model.onnx")
>>> report.max_abs_diff < 1e-4
True
"""

from ..streaming import StepGraph
from ._common import ExportReport
from .calibrate import CalibrationReader, clip_feeds, step_feeds
from .onnx import export_onnx
from .openvino import export_openvino
from .ov_stream import export_openvino_stream
from .quantize import latency_ms, quantize_export, quantize_onnx, quantize_onnx_static, quantize_openvino
from .run import ExportResult, export_run, sample_clips
from .runtime import RuntimeModel, load_for_runtime
from .torchscript import export_torchscript

__all__ = [
    "CalibrationReader",
    "ExportReport",
    "ExportResult",
    "RuntimeModel",
    "StepGraph",
    "clip_feeds",
    "export_onnx",
    "export_openvino",
    "export_openvino_stream",
    "export_run",
    "export_torchscript",
    "latency_ms",
    "load_for_runtime",
    "quantize_export",
    "quantize_onnx",
    "quantize_onnx_static",
    "quantize_openvino",
    "sample_clips",
    "step_feeds",
]
