"""The field's fully convolutional series CNNs: ``fcn`` (with MLSTM-FCN's squeeze-and-excite) and ``resnet1d``.

Both are Wang, Yan and Oates (2017), "Time series classification from scratch with deep neural networks: a strong
baseline": 'same' convolutions over time, BatchNorm, ReLU, ``T`` kept. They end before the global average pooling
of the papers: the model puts an LSTM after them (``arrangement="sequential"``) or pools them beside one
(``arrangement="parallel"``, LSTM-FCN). Padded steps change nothing (:mod:`._masked`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ._masked import ConvBN, MaskedBatchNorm1d, check_series, masked_mean, step_mask, zero_padded
from .registry import register_backbone

__all__ = ["FCN", "ResNet1d", "SqueezeExcite"]


def _positive_ints(name: str, what: str, values: tuple[int, ...]) -> tuple[int, ...]:
    """``values`` as a non-empty tuple of positive ints, else a :class:`ConfigError` naming the option."""
    values = tuple(values)
    if not values:
        raise ConfigError(f"{name} backbone needs at least one of {what}, e.g. {what}=(128, ...)")
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{name} backbone {what} must be positive ints, got {values}")
    return values


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite over time (Hu et al. 2018; MLSTM-FCN, Karim et al. 2019): each channel scaled by a gate
    learned from the means of all channels over the valid steps.

    Args:
        channels: ``C``.
        reduction: the gate's bottleneck is ``max(1, C // reduction)`` (16 in MLSTM-FCN).

    Shapes: x ``(N, C, T)``; valid ``(N, 1, T)`` or None. Returns ``(N, C, T)``, zero at padded steps.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        if not isinstance(reduction, int) or reduction < 1:
            raise ConfigError(f"squeeze-and-excite reduction must be a positive int, got {reduction!r}")
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(
            nn.Linear(channels, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, channels, bias=False), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return x * self.gate(masked_mean(x, valid)).unsqueeze(-1)  # (N, C, T) * (N, C, 1)


@register_backbone("fcn")
class FCN(nn.Module):
    """Wang et al. 2017's FCN without its pooling: blocks of conv - BatchNorm - ReLU, ``(N, T, F) → (N, T, C_last)``.

    Args:
        in_features: ``F`` of the input series.
        channels: each block's output channels (the paper's 128, 256, 128).
        kernel_sizes: each block's kernel (the paper's 8, 5, 3; even ones pad one more step on the right).
        se: MLSTM-FCN's squeeze-and-excite after each block but the last (after the first two of three), for
            multivariate series.
        se_reduction: the squeeze-and-excite bottleneck's reduction (16).

    >>> FCN(3, channels=(8, 16, 8))(torch.zeros(2, 20, 3)).shape
    torch.Size([2, 20, 8])
    """

    kind = "1d"
    causal = False  # 'same' padding: each step sees the steps after it

    def __init__(
        self,
        in_features: int = 1,
        channels: tuple[int, ...] = (128, 256, 128),
        kernel_sizes: tuple[int, ...] = (8, 5, 3),
        se: bool = False,
        se_reduction: int = 16,
    ):
        super().__init__()
        channels = _positive_ints("fcn", "channels", channels)
        kernel_sizes = _positive_ints("fcn", "kernel_sizes", kernel_sizes)
        if len(channels) != len(kernel_sizes):
            raise ConfigError(
                f"fcn backbone takes one kernel size per block: channels={channels} has {len(channels)} blocks, "
                f"kernel_sizes={kernel_sizes} has {len(kernel_sizes)}"
            )
        self.in_features = in_features
        self.out_channels = channels[-1]
        ins = (in_features, *channels[:-1])
        self.blocks = nn.ModuleList(ConvBN(a, c, k) for a, c, k in zip(ins, channels, kernel_sizes))
        self.se = nn.ModuleList(SqueezeExcite(c, se_reduction) for c in (channels[:-1] if se else ()))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Args: x ``(N, T, F)``; lengths: optional ``(N,)`` valid steps of a padded batch. Returns ``(N, T, C)``."""
        check_series(x, self.in_features, "fcn")
        valid = step_mask(lengths, x, "fcn")  # (N, 1, T) or None
        y = zero_padded(x.transpose(1, 2), valid)  # (N, F, T): the one place the series is channels-first
        for i, block in enumerate(self.blocks):
            y = block(y, valid)  # (N, C_i, T)
            if i < len(self.se):
                y = self.se[i](y, valid)
        return y.transpose(1, 2)  # (N, T, C)


class _Residual(nn.Module):
    """One block of :class:`ResNet1d`: conv-BN-ReLU, conv-BN-ReLU, conv-BN, plus the shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel_sizes: tuple[int, ...]):
        super().__init__()
        ins = [c_in] + [c_out] * (len(kernel_sizes) - 1)
        relu = [True] * (len(kernel_sizes) - 1) + [False]  # the last convolution's ReLU comes after the sum
        self.convs = nn.ModuleList(ConvBN(a, c_out, k, r) for a, k, r in zip(ins, kernel_sizes, relu))
        # the reference code's shortcut: a 1x1 convolution where the channels change, BatchNorm on both
        self.project = nn.Conv1d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()
        self.bn = MaskedBatchNorm1d(c_out)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        y = x
        for conv in self.convs:
            y = conv(y, valid)  # (N, C_out, T)
        shortcut = self.bn(self.project(x), valid)  # (N, C_out, T)
        return zero_padded(torch.relu(y + shortcut), valid)


@register_backbone("resnet1d")
class ResNet1d(nn.Module):
    """Wang et al. 2017's ResNet without its pooling: residual blocks of three convolutions, ``(N, T, F) → (N, T, C)``.

    Each block runs conv - BN - ReLU, conv - BN - ReLU, conv - BN over ``kernel_sizes``, adds its shortcut (a 1x1
    convolution and BN where the channels change, BN alone where they do not, as in the reference code) and ends
    in a ReLU.

    Args:
        in_features: ``F`` of the input series.
        channels: each block's channels (the paper's 64, 128, 128).
        kernel_sizes: the three convolutions of every block (the paper's 8, 5, 3).

    >>> ResNet1d(2, channels=(8, 8))(torch.zeros(2, 20, 2)).shape
    torch.Size([2, 20, 8])
    """

    kind = "1d"
    causal = False  # 'same' padding: each step sees the steps after it

    def __init__(
        self,
        in_features: int = 1,
        channels: tuple[int, ...] = (64, 128, 128),
        kernel_sizes: tuple[int, ...] = (8, 5, 3),
    ):
        super().__init__()
        channels = _positive_ints("resnet1d", "channels", channels)
        kernel_sizes = _positive_ints("resnet1d", "kernel_sizes", kernel_sizes)
        self.in_features = in_features
        self.out_channels = channels[-1]
        ins = (in_features, *channels[:-1])
        self.blocks = nn.ModuleList(_Residual(a, c, kernel_sizes) for a, c in zip(ins, channels))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Args: x ``(N, T, F)``; lengths: optional ``(N,)`` valid steps of a padded batch. Returns ``(N, T, C)``."""
        check_series(x, self.in_features, "resnet1d")
        valid = step_mask(lengths, x, "resnet1d")  # (N, 1, T) or None
        y = zero_padded(x.transpose(1, 2), valid)  # (N, F, T): the one place the series is channels-first
        for block in self.blocks:
            y = block(y, valid)  # (N, C_i, T)
        return y.transpose(1, 2)  # (N, T, C)
