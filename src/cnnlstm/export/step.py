"""One streaming step as a graph an exporter can trace."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ConfigError
from ..streaming import _FRAME_LAYOUT, check_streamable

if TYPE_CHECKING:
    from ..model import CNNLSTM

__all__ = ["StepGraph"]


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
