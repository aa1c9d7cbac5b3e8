"""Motion input: each frame's difference from the one before, alone or beside the frame, in front of the CNN.

A per-frame CNN sees one frame at a time, so it learns motion only through the RNN comparing feature vectors
that have already lost most of where things are. A frame difference puts motion into the pixels the CNN reads:
with the frame beside it (``"stack"``) a convolution can relate the change to the edges that caused it, which is
the local velocity (``I_t = -grad(I) . v``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, ShapeError

__all__ = ["MOTIONS", "FrameDifference"]

MOTIONS = ("none", "diff", "stack")


class FrameDifference(nn.Module):
    """``x[t] - x[t-1]`` per frame of a clip (zero for the first frame), alone or stacked with the frame.

    Args:
        mode: ``"none"`` (the frames as they are), ``"diff"`` (the differences only) or ``"stack"`` (frame and
            difference on the channel axis: ``2C`` channels).

    Shapes:
        x: ``(N, T, C, H, W)``; returns ``(N, T, C', H, W)`` with ``C' = C`` (none, diff) or ``2C`` (stack).
        A padded clip needs no lengths: a valid frame's difference reads only the frames before it.

    :meth:`step` is the same for one frame of a stream, given the previous frame (None at a stream's start,
    where the difference is zero as in the clip).

    >>> m = FrameDifference("stack")
    >>> m(torch.zeros(2, 5, 3, 8, 8)).shape
    torch.Size([2, 5, 6, 8, 8])
    """

    def __init__(self, mode: str = "none"):
        super().__init__()
        if mode not in MOTIONS:
            raise ConfigError(f"unknown motion input {mode!r}: expected one of {', '.join(MOTIONS)}")
        self.mode = mode

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"

    def channels(self, c: int) -> int:
        """Channels out for ``c`` channels in."""
        return 2 * c if self.mode == "stack" else c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(N, T, C, H, W)``. Returns ``(N, T, C', H, W)``."""
        if self.mode == "none":
            return x
        if x.dim() != 5:
            raise ShapeError(
                f"motion input {self.mode!r} takes clips (N, T, C, H, W), got {x.dim()}-D {tuple(x.shape)}: "
                "frame differences need a time axis"
            )
        d = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)  # (N, T, C, H, W)
        return d if self.mode == "diff" else torch.cat([x, d], dim=2)

    def step(self, frame: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """One frame ``(N, C, H, W)`` of a stream and the frame before it (None at the start); returns
        ``(N, C', H, W)``."""
        if self.mode == "none":
            return frame
        d = torch.zeros_like(frame) if previous is None else frame - previous
        return d if self.mode == "diff" else torch.cat([frame, d], dim=1)
