"""The backbone table (name → class), and what the model asks of any backbone: its time stride, local weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .._registry import Registry
from ..errors import ConfigError

__all__ = ["BACKBONES", "load_weights", "register_backbone", "time_stride"]

BACKBONES: Registry = Registry("backbone")
register_backbone = BACKBONES.register


def time_stride(backbone: nn.Module) -> int:
    """Input steps per output step of a backbone: its declared ``time_stride`` (conv1d's ``pool``), else 1.

    The model reads it to rescale lengths (:func:`cnnlstm.lengths.pooled_lengths`), the builder to refuse a
    per-step head, and the streamer to refuse to stream.
    """
    return int(getattr(backbone, "time_stride", 1))


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a local ``.safetensors`` or PyTorch state dict into ``module`` (never runs code)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {str(path)!r} does not exist (weights load from a local path only)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    module.load_state_dict(state)
