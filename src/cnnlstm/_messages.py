"""Fix texts shared by the modules' own errors and the shape doctor, so both say the same."""

from __future__ import annotations


def clip_maps_fix(shape: tuple, input_size: int) -> str:
    """The bridges that turn clip maps ``(N, T, C, H, W)`` into a sequence, with the ``F`` each gives."""
    c, h, w = shape[2:]
    options = [("gap", c), ("grid", c * 4), ("flatten", c * h * w), ("attention", c)]
    text = ", ".join(f'bridge="{n}" gives F={f}' for n, f in options)
    fits = [n for n, f in options if f == input_size]
    if fits:
        text += f' (bridge="{fits[0]}" fits input_size={input_size})'
    return f"Put a bridge in front: {text}."


def image_maps_fix(shape: tuple) -> str:
    """The fix for an image's feature maps ``(N, C, H, W)`` fed to an RNN."""
    n, c, h, w = shape
    return (
        f'Put a bridge in front: bridge="spatial" gives (N, H*W, C) = ({n}, {h * w}, {c}) with F={c}; '
        f'for clips keep the time axis and use TimeDistributed(cnn) then bridge="gap" (F={c}).'
    )
