"""What keeps a padded batch's padded steps out of a series CNN: step masks, BatchNorm statistics over valid steps
only, and 'same'-padded convolutions that see zeros past a series' end, as the series alone would.

The rule every series backbone here follows, so that a series gives the same output alone or padded in a batch
(in eval mode exactly; in training mode too, since the statistics count valid steps only):

- the input's padded steps are set to zero before the first convolution (whatever they held);
- every block's output is zeroed again at padded steps, so the next 'same' convolution reads zeros there, which is
  exactly the zero padding it adds past the end of the series alone;
- BatchNorm takes its batch statistics (and updates its running ones) over valid steps only;
- a max-pool reads padded steps as ``-inf``, as its own padding is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ShapeError
from ..lengths import check_lengths, valid_mask

__all__ = ["ConvBN", "MaskedBatchNorm1d", "check_series", "masked_mean", "same_pad", "step_mask", "zero_padded"]


def check_series(x: torch.Tensor, in_features: int, name: str) -> None:
    """Raise :class:`ShapeError` unless ``x`` is a series ``(N, T, F=in_features)``, with the fix."""
    if x.dim() == 3 and x.shape[-1] == in_features:
        return
    hint = ""
    if x.dim() == 3 and x.shape[1] == in_features:
        hint = f": the features are on axis 1, pass x.transpose(1, 2) = {(x.shape[0], x.shape[2], x.shape[1])}"
    elif x.dim() == 3:
        hint = f": feed series of {in_features} features or build it with in_features={x.shape[-1]}"
    raise ShapeError(f"{name} backbone wants series (N, T, F={in_features}), got {tuple(x.shape)}{hint}")


def step_mask(lengths: torch.Tensor | None, x: torch.Tensor, name: str) -> torch.Tensor | None:
    """The valid steps of a batch ``x`` ``(N, T, F)`` as a ``(N, 1, T)`` bool mask on ``x``'s device, or None when
    nothing is padded (no lengths, or every length ``T``), so that an unpadded batch runs the plain layers."""
    n, t = x.shape[:2]
    lengths = check_lengths(lengths, n, t, f"{name} backbone")
    if lengths is None or (lengths.device.type != "meta" and not bool((lengths < t).any())):
        return None
    return valid_mask(lengths.to(x.device), t).unsqueeze(1)  # (N, 1, T)


def zero_padded(y: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """``y`` ``(N, C, T)`` with its padded steps set to zero (whatever they held: NaN and inf too)."""
    return y if valid is None else y.masked_fill(~valid, 0.0)


def masked_mean(y: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """The mean of ``y`` ``(N, C, T)`` over each series' valid steps: ``(N, C)``."""
    if valid is None:
        return y.mean(dim=-1)
    return zero_padded(y, valid).sum(dim=-1) / valid.sum(dim=-1).to(y.dtype)  # (N, C) / (N, 1)


def same_pad(kernel_size: int) -> tuple[int, int]:
    """Keras' 'same' padding of a stride-1 convolution: ``T`` kept; an even kernel's extra step on the right."""
    return ((kernel_size - 1) // 2, kernel_size // 2)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over ``(N, C, T)`` whose training statistics count only the valid steps.

    Its parameters, buffers and state-dict keys are ``nn.BatchNorm1d``'s (it is one: freezing, BatchNorm folding and
    the shape doctor treat it as one). Without ``valid``, or when it normalises with its running statistics (eval
    mode, a frozen backbone), it is ``nn.BatchNorm1d`` itself. With ``valid`` in training, the batch mean and
    (biased) variance are taken over valid steps, and the running ones updated from them as PyTorch does (the
    unbiased variance, ``momentum``), so padded steps neither shift the statistics nor dilute them.

    Shapes: x ``(N, C, T)``; valid ``(N, 1, T)`` bool. Returns ``(N, C, T)``; float32 for a bfloat16 input, as
    BatchNorm under autocast gives.
    """

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if valid is None or not (self.training or not self.track_running_stats):
            return super().forward(x)
        xf = x.float()  # statistics in float32, as autocast runs BatchNorm
        w = valid.to(xf.dtype)  # (N, 1, T)
        count = w.sum()  # valid steps of the batch: every channel has the same
        mean = (xf * w).sum(dim=(0, 2)) / count  # (C,)
        var = ((xf - mean[:, None]).square() * w).sum(dim=(0, 2)) / count  # (C,), biased
        if self.training and self.track_running_stats:
            self._update_running(mean.detach(), var.detach(), count.detach())
        y = (xf - mean[:, None]) * torch.rsqrt(var + self.eps)[:, None]  # (N, C, T)
        if self.affine:
            y = y * self.weight[:, None] + self.bias[:, None]
        return y

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        unbiased = var * count / (count - 1).clamp(min=1)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)  # (1 - m) * running + m * batch
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)


class ConvBN(nn.Module):
    """Conv1d with 'same' padding (:func:`same_pad`, no bias) - :class:`MaskedBatchNorm1d` - ReLU (optional).

    Args:
        c_in, c_out: channels.
        kernel_size: any positive size; an even one pads one more step on the right (Keras' 'same').
        relu: end with a ReLU.

    Shapes: x ``(N, C_in, T)`` with zeros at padded steps; valid ``(N, 1, T)`` or None. Returns ``(N, C_out, T)``,
    zero at padded steps.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, relu: bool = True):
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 1:
            raise ConfigError(f"a convolution's kernel_size must be a positive int, got {kernel_size!r}")
        self.pad = same_pad(kernel_size)
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, bias=False)
        self.bn = MaskedBatchNorm1d(c_out)
        self.relu = relu

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        y = self.bn(self.conv(F.pad(x, self.pad)), valid)  # (N, C_out, T)
        if self.relu:
            y = F.relu(y)
        return zero_padded(y, valid)
