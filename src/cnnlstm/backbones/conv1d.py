"""``conv1d``: a stack of Conv1d - BatchNorm - ReLU over a series ``(N, T, F)``, causal or not, time-pooled or not."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ShapeError
from ._masked import MaskedBatchNorm1d, step_mask, zero_padded
from .registry import register_backbone

__all__ = ["Conv1dBackbone"]


@register_backbone("conv1d")
class Conv1dBackbone(nn.Module):
    """A stack of Conv1d - BatchNorm - ReLU over time: ``(N, T, F) → (N, T, F')``, ``T`` kept unless ``pool``.

    Args:
        in_features: ``F`` of the input series.
        channels: output channels of each layer; ``F'`` is the last.
        kernel_size: convolution size over time.
        dilated: dilations 1, 2, 4, ... (a wide receptive field for few layers).
        causal: pad on the left only, so step ``t`` sees steps ``<= t`` (streaming, forecasting).
        pool: max-pool time by this factor after the last layer (``T' = ceil(T / pool)``): a shorter
            sequence for the RNN on long series. Models with ``pool > 1`` cannot stream.
    """

    kind = "1d"

    def __init__(
        self,
        in_features: int = 1,
        channels: tuple[int, ...] = (64, 64, 64),
        kernel_size: int = 5,
        dilated: bool = False,
        causal: bool = False,
        pool: int = 1,
    ):
        super().__init__()
        if not isinstance(pool, int) or pool < 1:
            raise ConfigError(f"conv1d backbone pool must be a positive int, got {pool!r}")
        if not channels:
            raise ConfigError("conv1d backbone needs at least one layer: channels=(64, ...)")
        if not causal and kernel_size % 2 != 1:
            raise ConfigError(f"conv1d backbone needs an odd kernel_size unless causal=True, got {kernel_size}")
        self.in_features = in_features
        self.out_channels = channels[-1]
        self.causal = causal
        self.time_stride = pool  # output step i covers input steps [i * pool, (i + 1) * pool)
        self.layers = nn.ModuleList()
        self.pads: list[tuple[int, int]] = []
        c_in = in_features
        for i, c in enumerate(channels):
            dilation = 2**i if dilated else 1
            total = dilation * (kernel_size - 1)
            self.pads.append((total, 0) if causal else (total // 2, total - total // 2))
            self.layers.append(
                nn.Sequential(
                    OrderedDict(
                        conv=nn.Conv1d(c_in, c, kernel_size, dilation=dilation, bias=False),
                        bn=MaskedBatchNorm1d(c),  # nn.BatchNorm1d whose training statistics skip padded steps
                        relu=nn.ReLU(inplace=True),
                    )
                )
            )
            c_in = c

    def step(self, x: torch.Tensor, caches: list[torch.Tensor] | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One step of a causal stack: ``x`` ``(N, F)`` → ``(N, F')``, with each layer's last inputs cached.

        ``caches[i]`` ``(N, C_i, pad_i)`` holds layer ``i``'s previous inputs; zeros are exactly the layer's
        own causal padding, so a fresh (or reset) stream is a zero cache.
        """
        if not self.causal or self.time_stride > 1:
            raise ConfigError(
                "only a causal conv1d backbone without pooling (causal=True, pool=1) can run step by step"
            )
        y = x.unsqueeze(-1)  # (N, F, 1)
        new = []
        for i, ((left, _), layer) in enumerate(zip(self.pads, self.layers)):
            cache = caches[i] if caches is not None else y.new_zeros((y.shape[0], y.shape[1], left))
            inp = torch.cat([cache, y], dim=-1)  # (N, C_i, left + 1)
            new.append(inp[:, :, 1:] if left else cache)
            y = layer(inp)  # (N, C_{i+1}, 1): a valid convolution over exactly the receptive field
        return y.squeeze(-1), new

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Args: x ``(N, T, F)``; lengths: optional ``(N,)`` valid steps of a padded batch.

        Returns ``(N, T', F')`` with ``T' = ceil(T / pool)``. With ``lengths``, padded steps are zero in the input
        (whatever they held) and after every layer, stay out of BatchNorm's training statistics and never win a
        pooling window, so a series gives the same output alone or padded (:mod:`._masked`).
        """
        if x.dim() != 3 or x.shape[-1] != self.in_features:
            hint = ""
            if x.dim() == 3 and x.shape[1] == self.in_features:
                hint = f": the features are on axis 1, pass x.transpose(1, 2) = {(x.shape[0], x.shape[2], x.shape[1])}"
            raise ShapeError(f"conv1d backbone wants series (N, T, F={self.in_features}), got {tuple(x.shape)}{hint}")
        valid = step_mask(lengths, x, "conv1d")  # (N, 1, T), None when nothing is padded
        y = zero_padded(x.transpose(1, 2), valid)  # (N, F, T): the one place the series is channels-first
        for pad, layer in zip(self.pads, self.layers):
            y = layer.relu(layer.bn(layer.conv(F.pad(y, pad)), valid))  # (N, C_i, T)
            y = zero_padded(y, valid)  # padded steps stay zero, as the unpadded series' own padding is
        p = self.time_stride
        if p > 1:  # max over windows of p steps; padded steps never win (unfold exports with a dynamic T)
            if valid is not None:
                y = y.masked_fill(~valid, float("-inf"))
            y = F.pad(y, (0, p - 1), value=float("-inf")).unfold(-1, p, p).amax(-1)  # (N, C, ceil(T / p))
            if valid is not None:  # windows wholly past a series' end: zero, not -inf
                y = y.masked_fill(torch.isinf(y), 0.0)
        return y.transpose(1, 2)  # (N, T', F')
