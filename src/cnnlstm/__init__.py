"""cnnlstm: CNN → LSTM/GRU models that work on their shapes.

>>> import torch, cnnlstm as cl
>>> model = cl.CNNLSTM(input_shape=(16, 3, 112, 112), num_classes=10)
>>> cl.infer(model, (8, 16, 3, 112, 112))
torch.Size([8, 10])
"""

from ._fast.alloc import tune_malloc
from ._fast.switch import fast_path
from .backbones import BACKBONES, Conv1dBackbone, SmallCNN, build_backbone, register_backbone
from .errors import CnnlstmError, ConfigError, MissingDependencyError, ShapeError
from .layers import (
    BRIDGES,
    HEADS,
    Bridge,
    ConvLSTM,
    Head,
    Temporal,
    TimeDistributed,
    bridge,
    head,
    register_bridge,
    register_head,
)
from .layout import Layout, to_canonical
from .model import CNNLSTM, CNNLSTMConfig
from .precision import bf16_supported
from .shapes import Diagnosis, Explanation, Finding, diagnose, explain, infer

__version__ = "0.1.0"

# loaded on first use: exporting needs onnx/onnxruntime (openvino), which `import cnnlstm` does not import
_LAZY = {
    "export_onnx": "export",
    "export_openvino": "export",
    "export_torchscript": "export",
    "export_run": "export",
    "load_run": "run",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKBONES",
    "BRIDGES",
    "CNNLSTM",
    "HEADS",
    "Bridge",
    "CNNLSTMConfig",
    "CnnlstmError",
    "ConfigError",
    "Conv1dBackbone",
    "ConvLSTM",
    "Diagnosis",
    "Explanation",
    "Finding",
    "Head",
    "Layout",
    "MissingDependencyError",
    "ShapeError",
    "SmallCNN",
    "Temporal",
    "TimeDistributed",
    "bf16_supported",
    "bridge",
    "build_backbone",
    "diagnose",
    "explain",
    "export_onnx",
    "export_openvino",
    "export_run",
    "export_torchscript",
    "fast_path",
    "head",
    "infer",
    "load_run",
    "register_backbone",
    "register_bridge",
    "register_head",
    "to_canonical",
    "tune_malloc",
]
