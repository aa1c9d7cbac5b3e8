"""``inception1d``: InceptionTime's network (Ismail Fawaz et al. 2020) without its pooling.

Each module: a 1x1 bottleneck, three 'same' convolutions of different widths on it, and a max-pool branch (max over
3 steps, then a 1x1 convolution) on the module's input; the four concatenated, BatchNorm, ReLU. Every third module
adds a shortcut from the input of the three (1x1 convolution and BatchNorm), then ReLU. ``T`` is kept; padded
steps change nothing (:mod:`._masked`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ._masked import MaskedBatchNorm1d, check_series, same_pad, step_mask, zero_padded
from .registry import register_backbone

__all__ = ["Inception1d", "odd_kernels"]


def odd_kernels(kernel_sizes: tuple[int, ...]) -> tuple[int, ...]:
    """InceptionTime's kernels made odd, as its PyTorch ports do (an even one loses a step): 'same' padding is then
    symmetric, each step centred.

    >>> odd_kernels((40, 20, 10))
    (39, 19, 9)
    """
    return tuple(k - 1 if k % 2 == 0 else k for k in kernel_sizes)


def _max3(x: torch.Tensor) -> torch.Tensor:
    """``max_pool1d(x, 3, stride=1, padding=1)`` over ``(N, C, T)``, written as shifted maxima: the ONNX exporter
    fixes ``T`` to the example's for ``max_pool1d`` with padding, and keeps it dynamic for this."""
    p = F.pad(x, (1, 1), value=float("-inf"))  # (N, C, T + 2)
    return torch.maximum(torch.maximum(p[..., :-2], p[..., 1:-1]), p[..., 2:])  # (N, C, T)


class _Module(nn.Module):
    """One Inception module: ``(N, C_in, T) → (N, 4 * filters, T)`` (three convolutions and the max-pool branch)."""

    def __init__(self, c_in: int, filters: int, bottleneck: int, kernel_sizes: tuple[int, ...]):
        super().__init__()
        # as in InceptionTime, no bottleneck for a single channel; no bias, so zeros in give zeros out
        narrow = bottleneck > 0 and c_in > 1
        self.bottleneck = nn.Conv1d(c_in, bottleneck, 1, bias=False) if narrow else nn.Identity()
        width = bottleneck if narrow else c_in
        self.pads = [same_pad(k) for k in kernel_sizes]
        self.convs = nn.ModuleList(nn.Conv1d(width, filters, k, bias=False) for k in kernel_sizes)
        self.pool_conv = nn.Conv1d(c_in, filters, 1, bias=False)
        self.bn = MaskedBatchNorm1d(filters * (len(kernel_sizes) + 1))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        b = self.bottleneck(x)  # (N, B, T), zero at padded steps
        branches = [conv(F.pad(b, pad)) for pad, conv in zip(self.pads, self.convs)]  # each (N, filters, T)
        # the max over 3 steps reads padded steps as -inf, as its own padding past the end is
        pooled = _max3(x if valid is None else x.masked_fill(~valid, float("-inf")))  # (N, C_in, T)
        branches.append(self.pool_conv(zero_padded(pooled, valid)))  # (N, filters, T)
        y = self.bn(torch.cat(branches, dim=1), valid)  # (N, 4 * filters, T)
        return zero_padded(F.relu(y), valid)


class _Shortcut(nn.Module):
    """The residual of three modules: 1x1 convolution and BatchNorm of their input, added to their output, ReLU."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, 1, bias=False)
        self.bn = MaskedBatchNorm1d(c_out)

    def forward(self, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        return zero_padded(F.relu(y + self.bn(self.conv(x), valid)), valid)  # (N, C_out, T)


@register_backbone("inception1d")
class Inception1d(nn.Module):
    """InceptionTime's network without its pooling: ``(N, T, F) → (N, T, 4 * filters)``.

    Args:
        in_features: ``F`` of the input series.
        depth: Inception modules (6).
        filters: channels of each of a module's four branches (32; a module gives ``4 * filters``).
        bottleneck: channels of the 1x1 bottleneck in front of the wide convolutions (32; 0: none).
        kernel_sizes: the three convolutions' widths, made odd (:func:`odd_kernels`): 40, 20, 10 run as 39, 19, 9.
        residual: a shortcut every third module (from the input of the three).

    >>> Inception1d(3, depth=3, filters=4, bottleneck=4, kernel_sizes=(9, 5, 3))(torch.zeros(2, 20, 3)).shape
    torch.Size([2, 20, 16])
    """

    kind = "1d"
    causal = False  # 'same' padding: each step sees the steps after it

    def __init__(
        self,
        in_features: int = 1,
        depth: int = 6,
        filters: int = 32,
        bottleneck: int = 32,
        kernel_sizes: tuple[int, ...] = (40, 20, 10),
        residual: bool = True,
    ):
        super().__init__()
        for what, v, low in (("depth", depth, 1), ("filters", filters, 1), ("bottleneck", bottleneck, 0)):
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ConfigError(f"inception1d backbone {what} must be an int >= {low}, got {v!r}")
        kernel_sizes = tuple(kernel_sizes)
        if not kernel_sizes or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in kernel_sizes):
            raise ConfigError(f"inception1d backbone kernel_sizes must be positive ints, got {kernel_sizes}")
        self.kernel_sizes = odd_kernels(kernel_sizes)
        self.in_features = in_features
        self.out_channels = filters * (len(kernel_sizes) + 1)
        ins = [in_features] + [self.out_channels] * (depth - 1)
        self.blocks = nn.ModuleList(_Module(c, filters, bottleneck, self.kernel_sizes) for c in ins)
        # shortcut i closes modules 3i .. 3i+2, from the input of module 3i
        self.shortcuts = nn.ModuleList(
            _Shortcut(ins[d - 2], self.out_channels) for d in range(depth) if residual and d % 3 == 2
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Args: x ``(N, T, F)``; lengths: optional ``(N,)`` valid steps of a padded batch. Returns ``(N, T, C)``."""
        check_series(x, self.in_features, "inception1d")
        valid = step_mask(lengths, x, "inception1d")  # (N, 1, T) or None
        y = zero_padded(x.transpose(1, 2), valid)  # (N, F, T): the one place the series is channels-first
        res = y
        shortcuts = iter(self.shortcuts)
        for d, module in enumerate(self.blocks):
            y = module(y, valid)  # (N, 4 * filters, T)
            if self.shortcuts and d % 3 == 2:
                y = next(shortcuts)(res, y, valid)
                res = y
        return y.transpose(1, 2)  # (N, T, C)
