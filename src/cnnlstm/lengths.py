"""Padding lengths of a batch of sequences, and the masks of their valid steps."""

from __future__ import annotations

import torch

from .errors import ShapeError

__all__ = ["check_lengths", "pooled_lengths", "valid_mask"]


def valid_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """A ``(N, T)`` boolean mask, True where step ``t < lengths[n]``, on ``lengths``' device.

    Args:
        lengths: ``(N,)`` integer lengths, each in ``1..T``.
        steps: ``T``.

    >>> valid_mask(torch.tensor([1, 3]), 3)
    tensor([[ True, False, False],
            [ True,  True,  True]])
    """
    return torch.arange(steps, device=lengths.device) < lengths.unsqueeze(1)  # (N, T)


def pooled_lengths(lengths: torch.Tensor | None, stride: int) -> torch.Tensor | None:
    """Valid steps after a layer that pools time by ``stride``: ``ceil(lengths / stride)`` (None stays None).

    Output step ``i`` covers input steps ``[i * stride, (i + 1) * stride)``, so it is valid when any of them is.

    >>> pooled_lengths(torch.tensor([1, 4, 5]), 4)
    tensor([1, 1, 2])
    """
    if lengths is None or stride == 1:
        return lengths
    return torch.div(lengths + stride - 1, stride, rounding_mode="floor")


def check_lengths(lengths: torch.Tensor | None, batch: int, steps: int, owner: str) -> torch.Tensor | None:
    """Validate ``lengths`` against a batch of ``batch`` sequences of ``steps`` steps.

    Args:
        lengths: ``(N,)`` integer lengths, or None.
        batch: ``N``.
        steps: ``T``, the padded length.
        owner: what to call the caller in the message.

    Returns:
        ``lengths`` as an int64 tensor, or None when none were given.
    """
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ShapeError(
            f"{owner}: lengths must be (N,) = ({batch},), one length per sequence, got {tuple(lengths.shape)}"
        )
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ShapeError(f"{owner}: lengths must be integers, got dtype {lengths.dtype}")
    if lengths.device.type != "meta" and lengths.numel():
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 1 or hi > steps:
            raise ShapeError(
                f"{owner}: every length must be in 1..T={steps} (the padded clip length), got min {lo}, max {hi}"
            )
    return lengths.long()
