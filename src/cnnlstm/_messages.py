"""Fix texts shared by the layers' own errors and the shape doctor, so both say the same; and the bridge table.

The table of bridges (:data:`BRIDGES`) lives here, below both ``layers`` and ``shapes``:
``layers/bridges.py`` fills it as it defines each bridge, and :func:`clip_maps_fix` asks
every registered bridge what ``F`` it gives. So the fix text always names the bridges that
exist, with their real sizes, and neither ``shapes`` nor this module imports a layer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ._registry import Registry
from .errors import ConfigError

BRIDGES: Registry[Any] = Registry("bridge")  # name -> Bridge class; filled by cnnlstm.layers.bridges


def suggested_bridges(channels: int) -> list[Any]:
    """One default-option instance of each registered bridge over clip maps that fix texts name.

    A bridge that cannot be built without options it does not know (its ``example`` raises) is left out.
    """
    found = []
    for cls in (BRIDGES.get(name) for name in BRIDGES):
        if getattr(cls, "in_axes", None) != "NTCHW" or not getattr(cls, "suggested", False):
            continue
        try:
            with torch.device("meta"):  # a bridge with weights (attention) allocates nothing
                found.append(cls.example(channels))
        except (TypeError, ConfigError):
            continue
    return found


def clip_maps_fix(shape: tuple, input_size: int, bridges: Iterable[Any] | None = None) -> str:
    """The bridges that turn clip maps ``(N, T, C, H, W)`` into a sequence, with the ``F`` each gives.

    Args:
        shape: the clip maps' shape.
        input_size: the ``F`` the RNN was built for.
        bridges: the bridge instances to name (default: :func:`suggested_bridges`); a bridge
            whose options differ from its defaults is named with them, ``bridge="grid" (k=3)``.
    """
    c, h, w = shape[2:]
    if bridges is None:
        named = [(f'bridge="{b.name}"', b) for b in suggested_bridges(c)]
    else:
        named = [(_label(b, c), b) for b in bridges]
    options = [(label, b.out_features(c, h, w)) for label, b in named]
    text = ", ".join(f"{label} gives F={f}" for label, f in options)
    fits = [label for label, f in options if f == input_size]
    if fits:
        text += f" ({fits[0]} fits input_size={input_size})"
    return f"Put a bridge in front: {text}."


def _label(b: Any, channels: int) -> str:
    """``bridge="grid"``, with the options that differ from the bridge's defaults: ``bridge="grid" (k=3)``."""
    options = b.options()
    with torch.device("meta"):
        defaults = type(b).example(channels).options()
    changed = ", ".join(f"{k}={v}" for k, v in options.items() if defaults.get(k) != v)
    return f'bridge="{b.name}"' + (f" ({changed})" if changed else "")


def sequence_to_maps_rnn_fix(shape: tuple) -> str:
    """The fix for a sequence ``(N, T, F)`` fed to a recurrence over maps (a ConvLSTM), which reads
    ``(N, T, C, H, W)``: no bridge before it, or an LSTM for flat features."""
    return (
        "A ConvLSTM reads each frame's maps (N, T, C, H, W), not features: do not bridge before it (feed it the "
        "backbone's maps and put the bridge after it, as CNNLSTM(rnn='convlstm') does), or use rnn='lstm' for "
        f"flat features (N, T, F={shape[-1]})."
    )


def maps_rnn_problem(shape: tuple, in_channels: int) -> tuple[str, str] | None:
    """What is wrong with an input of ``shape`` to a recurrence over maps built for ``in_channels`` channels,
    and its fix: ``(problem, fix)``, or None when ``(N, T, C, H, W)`` fits. The layer's own error and the shape
    doctor's rule both say this."""
    c = in_channels
    if len(shape) == 3:
        return "a sequence of features (N, T, F)", sequence_to_maps_rnn_fix(shape)
    if len(shape) == 4:
        n, *rest = shape
        return (
            "one step's maps (N, C, H, W), no time axis",
            f"For a clip add the time axis: x.unsqueeze(1) gives ({n}, 1, {', '.join(map(str, rest))}); "
            "to stream step by step call step(x, state).",
        )
    if len(shape) != 5:
        return f"a {len(shape)}-D tensor", "Give a clip of feature maps (N, T, C, H, W)."
    n, t, got, h, _w = shape
    if got == c:
        return None
    if shape[-1] == c:
        return (
            f"channels last (N, T, H, W, C) with C={c} on axis 4",
            f"Permute to (N, T, C, H, W): x.permute(0, 1, 4, 2, 3) gives ({n}, {t}, {c}, {got}, {h}).",
        )
    return f"C={got} channels but in_channels={c}", f"Build it with in_channels={got}."


def image_maps_fix(shape: tuple) -> str:
    """The fix for an image's feature maps ``(N, C, H, W)`` fed to an RNN."""
    n, c, h, w = shape
    return (
        f'Put a bridge in front: bridge="spatial" gives (N, H*W, C) = ({n}, {h * w}, {c}) with F={c}; '
        f'for clips keep the time axis and use TimeDistributed(cnn) then bridge="gap" (F={c}).'
    )
