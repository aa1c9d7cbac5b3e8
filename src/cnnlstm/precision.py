"""Inference precision: float32, bfloat16 autocast, or ``auto`` (bfloat16 where the CPU computes it natively),
chosen where inference is called (:meth:`cnnlstm.CNNLSTM.autocast`), never stored in a model."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

from ._fast.onednn import bf16_native
from .errors import ConfigError

__all__ = ["PRECISIONS", "bf16_supported", "check_precision", "resolve_precision"]

# inference: float32, bfloat16 autocast, or auto: bfloat16 where the CPU computes it natively (training's words,
# cnnlstm.tasks, add "16")
PRECISIONS = ("32", "bf16", "auto")


def bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    return bf16_native()  # the one oneDNN query, which the fast path's bfloat16 prefix asks too


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a :class:`ConfigError` that lists them."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return precision


def resolve_precision(precision: str, device_type: str = "cpu") -> str:
    """``"32"`` or ``"bf16"`` for ``precision``: ``"auto"`` is bfloat16 on a CPU that computes it natively
    (:func:`bf16_supported`, as OpenVINO's CPU plugin chooses by default) and float32 elsewhere (other devices
    included); the others are themselves.

    >>> resolve_precision("32")
    '32'
    """
    if check_precision(precision) != "auto":
        return precision
    return "bf16" if device_type == "cpu" and bf16_supported() else "32"


# the precision the innermost `with model.autocast(...)` chose, which wins over set_precision's (deprecated) choice
_CHOSEN: contextvars.ContextVar[str | None] = contextvars.ContextVar("cnnlstm_precision", default=None)


@contextlib.contextmanager
def _autocast(precision: str, device_type: str) -> Iterator[None]:
    token = _CHOSEN.set(precision)
    try:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            yield
    finally:
        _CHOSEN.reset(token)
