"""Calibration data for static int8: the inputs a graph meets in use, as feeds (input name → array).

The clip graph meets clips. The streaming step meets frames *and its own state*: ``h`` and ``c`` after t frames
of a stream, which no random input resembles. :func:`step_feeds` replays clips through the float32 step,
frame by frame, the state carried from step to step, and yields each step's inputs ``(frame, h[, c][, previous])``,
so a calibrator sees the states' ranges as a stream makes them. :class:`CalibrationReader` hands feeds to
onnxruntime's quantizer; NNCF takes them as they are (``nncf.Dataset``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from ._common import state_shapes, step_names
from .step import step_graph

if TYPE_CHECKING:
    from ..model import CNNLSTM

__all__ = ["CalibrationReader", "clip_feeds", "step_feeds"]

Feeds = dict[str, np.ndarray]


def clip_feeds(clips: torch.Tensor, batch: int = 8) -> Iterator[Feeds]:
    """The clip graph's calibration inputs: ``{"clip": (B, T, ...)}``, ``clips`` ``(N, T, ...)`` in batches of
    ``batch``."""
    for i in range(0, len(clips), batch):
        yield {"clip": clips[i : i + batch].numpy()}


@torch.inference_mode()
def step_feeds(model: CNNLSTM, clips: torch.Tensor, batch: int = 8) -> Iterator[Feeds]:
    """The step graph's calibration inputs: ``clips`` ``(N, T, ...)`` in batches of ``batch`` streamed frame by
    frame through the float32 step (PyTorch), each step's inputs yielded as the stream met them.

    Yields:
        ``{"frame": (B, C, H, W), "h": (layers, B, D)[, "c": ...][, "previous": (B, C, H, W)]}``: the frame in the
        model's frame layout, the state the float32 step carried to it (zeros at a stream's start), and for a
        model with motion input the frame before it (the frame itself at the start); T feeds per batch.
    """
    step = step_graph(model).eval()
    names = step_names(model)[0]  # frame, h[, c][, previous]
    t_axis = model.layout.value.index("T")  # the clip's time axis: (N, T, ...) or (N, C, T, H, W)
    with model.autocast("32"):
        for i in range(0, len(clips), batch):
            part = clips[i : i + batch]
            carried = [torch.zeros(shape) for shape in state_shapes(model, len(part))]
            for t in range(part.shape[t_axis]):
                frame = part.select(t_axis, t)  # (B, C, H, W) in the model's frame layout
                if t == 0 and "previous" in names:  # a stream's start: the frame is its own previous
                    carried.append(frame)
                inputs = [frame, *carried]
                yield {name: x.numpy().copy() for name, x in zip(names, inputs)}
                _, *carried = step(*inputs)  # h_out[, c_out][, previous_out]: the next step's inputs


class CalibrationReader:
    """Feeds as onnxruntime's quantizer reads them (its ``CalibrationDataReader`` protocol): ``get_next()`` gives
    the next feed, then None; ``rewind()`` starts over."""

    def __init__(self, feeds: Iterable[Feeds]):
        self.feeds = list(feeds)
        self._next = 0

    def get_next(self) -> Feeds | None:
        if self._next >= len(self.feeds):
            return None
        self._next += 1
        return self.feeds[self._next - 1]

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self.feeds)
