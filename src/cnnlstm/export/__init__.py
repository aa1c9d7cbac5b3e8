"""Export to ONNX (whole clip and streaming step) and TorchScript, verified against PyTorch; int8.

Every export is checked on fresh random inputs with onnxruntime (or the TorchScript module):
the largest absolute difference to PyTorch is reported, and above ``tol`` it is an error.

>>> import cnnlstm as cl, tempfile
>>> model = cl.CNNLSTM(input_shape=(4, 3, 32, 32), hidden_size=8, num_classes=3, backbone_options={"channels": (4,)})
>>> report = cl.export_onnx(model, tempfile.mkdtemp() + "/model.onnx")
>>> report.max_abs_diff < 1e-4
True
"""

from ..streaming import StepGraph
from ._common import ExportReport
from .onnx import export_onnx
from .quantize import int8_report, latency_ms, quantize_onnx
from .run import ExportResult, export_run, sample_clips
from .torchscript import export_torchscript

__all__ = [
    "ExportReport",
    "ExportResult",
    "StepGraph",
    "export_onnx",
    "export_run",
    "export_torchscript",
    "int8_report",
    "latency_ms",
    "quantize_onnx",
    "sample_clips",
]
