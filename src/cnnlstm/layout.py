"""Named layouts and the one permutation at a model's entry.

cnnlstm works inside in three canonical layouts: clips ``NTCHW``, images ``NCHW`` and
series ``NTF`` (batch first). Arrays that arrive in another layout (``NTHWC`` as Keras
writes them, ``NCTHW`` as video ``Conv3d`` wants, ``NHWC``, ``NFT`` as ``Conv1d`` wants) are
named by a layout string and permuted exactly once, at the entry.

>>> import torch
>>> to_canonical(torch.zeros(2, 16, 112, 112, 3), "NTHWC").shape
torch.Size([2, 16, 3, 112, 112])
"""

from __future__ import annotations

from enum import Enum

import torch

from .errors import ConfigError, ShapeError

__all__ = [
    "Layout",
    "canonical",
    "canonical_shape",
    "channel_axis",
    "frame_layout",
    "frame_to_canonical",
    "kind",
    "permutation",
    "to_canonical",
]


class Layout(str, Enum):
    """Every layout cnnlstm understands; the letters are the axes in order."""

    NTCHW = "NTCHW"  # clip, canonical
    NTHWC = "NTHWC"  # clip, channels last (Keras / TensorFlow arrays)
    NCTHW = "NCTHW"  # clip, as Conv3d wants it
    NCHW = "NCHW"  # image, canonical
    NHWC = "NHWC"  # image, channels last
    NTF = "NTF"  # series, canonical (batch first)
    NFT = "NFT"  # series, as Conv1d wants it

    def __str__(self) -> str:
        return self.value


_CANONICAL = {"clip": Layout.NTCHW, "image": Layout.NCHW, "series": Layout.NTF}
_KIND = {
    Layout.NTCHW: "clip",
    Layout.NTHWC: "clip",
    Layout.NCTHW: "clip",
    Layout.NCHW: "image",
    Layout.NHWC: "image",
    Layout.NTF: "series",
    Layout.NFT: "series",
}


def parse(layout: str | Layout) -> Layout:
    """The :class:`Layout` named by a string (case-insensitive)."""
    try:
        return Layout(str(layout).upper())
    except ValueError:
        valid = ", ".join(v.value for v in Layout)
        raise ConfigError(f"unknown layout {layout!r}: expected one of {valid}") from None


def kind(layout: str | Layout) -> str:
    """``"clip"``, ``"image"`` or ``"series"``."""
    return _KIND[parse(layout)]


def canonical(layout: str | Layout) -> Layout:
    """The canonical layout of the same kind: ``NTHWC`` → ``NTCHW``, ``NFT`` → ``NTF``."""
    return _CANONICAL[kind(layout)]


def permutation(src: str | Layout, dst: str | Layout) -> tuple[int, ...]:
    """The ``permute`` order that takes a tensor from layout ``src`` to layout ``dst``.

    >>> permutation("NTHWC", "NTCHW")
    (0, 1, 4, 2, 3)
    """
    return _order(parse(src).value, parse(dst).value)


def _order(s: str, d: str) -> tuple[int, ...]:
    if sorted(s) != sorted(d):
        raise ConfigError(f"cannot permute {s} into {d}: they do not have the same axes")
    return tuple(s.index(axis) for axis in d)


def canonical_shape(shape: tuple, layout: str | Layout) -> tuple:
    """A shape in ``layout`` reordered into the canonical layout (entries may be ``None``).

    Works for full shapes (with ``N``) and for one sample's shape (without ``N``).

    >>> canonical_shape((16, 112, 112, 3), "NTHWC")
    (16, 3, 112, 112)
    """
    lay = parse(layout)
    shape = tuple(shape)
    axes = lay.value
    if len(shape) == len(axes) - 1:
        axes = axes[1:]
    if len(shape) != len(axes):
        raise ShapeError(
            f"layout {lay.value} wants a shape of {len(lay.value)} axes {tuple(lay.value)} (or "
            f"{len(lay.value) - 1} without N), got {len(shape)}: {shape}"
        )
    target = canonical(lay).value
    if len(axes) < len(target):
        target = target[1:]
    return tuple(shape[axes.index(a)] for a in target)


def channel_axis(layout: str | Layout) -> int:
    """Where the channels (``F`` of a series) are in one sample's canonical shape, without ``N``.

    >>> channel_axis("NTHWC"), channel_axis("NHWC"), channel_axis("NFT")
    (1, 0, 1)
    """
    axes = canonical(layout).value[1:]
    return axes.index("F" if "F" in axes else "C")


def to_canonical(x: torch.Tensor, layout: str | Layout) -> torch.Tensor:
    """Permute a batch from ``layout`` into its canonical layout, checking the rank.

    Args:
        x: a batch in ``layout``, e.g. ``(N, T, H, W, C)`` for ``NTHWC``.
        layout: the layout ``x`` is in.

    Returns:
        A view of ``x`` in ``NTCHW``, ``NCHW`` or ``NTF`` (no copy).
    """
    lay = parse(layout)
    if x.dim() != len(lay.value):
        letters = ", ".join(lay.value)
        hint = ""
        if x.dim() == len(lay.value) + 1 and kind(lay) == "image":
            hint = " A batch of clips needs a clip layout (NTCHW, NTHWC or NCTHW)."
        elif x.dim() == len(lay.value) - 1:
            hint = " Add the batch axis with x.unsqueeze(0) for a single sample."
        raise ShapeError(f"layout {lay.value} wants ({letters}), got {x.dim()}-D {tuple(x.shape)}.{hint}")
    if lay == canonical(lay):
        return x
    return x.permute(permutation(lay, canonical(lay)))


def frame_layout(layout: str | Layout) -> str:
    """The layout of one step of every sequence in a batch: ``layout`` without its ``T`` axis.

    >>> frame_layout("NTHWC"), frame_layout("NCTHW"), frame_layout("NFT")
    ('NHWC', 'NCHW', 'NF')
    """
    lay = parse(layout)
    if "T" not in lay.value:
        raise ConfigError(f"layout {lay.value} has no time axis, so it has no frames")
    return lay.value.replace("T", "")


def frame_to_canonical(frame: torch.Tensor, layout: str | Layout) -> torch.Tensor:
    """Permute one step of every sequence from ``layout``'s frame layout into the canonical one's.

    Args:
        frame: ``(N, H, W, C)`` for ``NTHWC``, ``(N, C, H, W)`` for ``NTCHW``/``NCTHW``, ``(N, F)`` for series;
            its rank is the caller's to check.
        layout: the layout of the whole sequences.

    Returns:
        A view in ``NCHW`` (clips) or ``NF`` (series).

    >>> frame_to_canonical(torch.zeros(2, 32, 32, 3), "NTHWC").shape
    torch.Size([2, 3, 32, 32])
    """
    src, dst = frame_layout(layout), frame_layout(canonical(layout))
    return frame if src == dst else frame.permute(_order(src, dst))
