"""``small``: the built-in 2-D CNN, blocks of conv 3x3 - BatchNorm - ReLU - maxpool 2x2."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import ConfigError, ShapeError
from .registry import register_backbone

__all__ = ["SmallCNN"]


def _block(c_in: int, c_out: int, kernel_size: int) -> nn.Sequential:
    """conv - BatchNorm - ReLU - maxpool 2x2: one block of :class:`SmallCNN`, ``(B, C, H, W) → (B, C', H/2, W/2)``."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=False),
            bn=nn.BatchNorm2d(c_out),
            relu=nn.ReLU(inplace=True),
            pool=nn.MaxPool2d(2),
        )
    )


@register_backbone("small")
class SmallCNN(nn.Sequential):
    """Blocks of conv 3x3 - BatchNorm - ReLU - maxpool 2x2: ``(B, C, H, W) → (B, C_last, H/2^k, W/2^k)``.

    The default ``channels=(32, 64, 128, 256)`` is the reference model of the benchmarks.

    Args:
        in_channels: ``C`` of the input frames.
        channels: output channels of each block.
        kernel_size: odd convolution size.
    """

    kind = "2d"
    sequential_forward = True  # forward checks the input, then runs its blocks in order: a plain chain

    def __init__(self, in_channels: int = 3, channels: tuple[int, ...] = (32, 64, 128, 256), kernel_size: int = 3):
        if kernel_size % 2 != 1:
            raise ConfigError(f"small backbone needs an odd kernel_size, got {kernel_size}")
        if not channels:
            raise ConfigError("small backbone needs at least one block: channels=(32, ...)")
        c_in = (in_channels, *channels)
        super().__init__(
            OrderedDict((f"block{i + 1}", _block(a, b, kernel_size)) for i, (a, b) in enumerate(zip(c_in, channels)))
        )
        self.in_channels = in_channels
        self.out_channels = channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(B, C, H, W)``. Returns ``(B, C_last, H/2^k, W/2^k)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            if x.dim() == 5:
                hint = ": a clip; wrap the CNN in cnnlstm.TimeDistributed"
            elif x.dim() == 4 and x.shape[-1] == self.in_channels:
                hint = f": channels last; pass x.permute(0, 3, 1, 2) = {(x.shape[0], x.shape[3], *x.shape[1:3])}"
            elif x.dim() == 4:
                hint = f": feed {self.in_channels}-channel images or build it with in_channels={x.shape[1]}"
            else:
                hint = ""
            raise ShapeError(f"SmallCNN wants images (B, C={self.in_channels}, H, W), got {tuple(x.shape)}{hint}")
        return super().forward(x)
