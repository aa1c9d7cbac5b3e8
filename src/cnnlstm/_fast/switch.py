"""The one switch of the fast path: :func:`fast_path` (a context manager) and the environment's ``CNNLSTM_FAST``.

``CNNLSTM_FAST=0`` (or ``false``, ``off``, ``no``) turns the fast path off for a process and its children;
``with cnnlstm.fast_path(False):`` turns it off for a block (and ``fast_path(True)`` back on inside one), in this
thread or task only. Off, ``TimeDistributed`` runs its module exactly as written on the folded frames. The fast
path is also off under ``torch.use_deterministic_algorithms(True)``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Iterator

import torch

__all__ = ["DOUBLE_BACKWARD", "enabled", "fast_path", "once_differentiable"]

_OFF = ("0", "false", "off", "no")
_CHOSEN: contextvars.ContextVar[bool | None] = contextvars.ContextVar("cnnlstm_fast", default=None)

DOUBLE_BACKWARD = (
    "cnnlstm's fast path computes this gradient in one pass that cannot be differentiated again (double backward, "
    "a gradient penalty): run the model under `with cnnlstm.fast_path(False):`, or set CNNLSTM_FAST=0"
)


def enabled() -> bool:
    """Whether the fast path runs here: the innermost :func:`fast_path` block's choice, else ``CNNLSTM_FAST``
    (on unless set to 0, false, off or no); always off under deterministic algorithms."""
    chosen = _CHOSEN.get()
    on = os.environ.get("CNNLSTM_FAST", "1").strip().lower() not in _OFF if chosen is None else chosen
    return on and not torch.are_deterministic_algorithms_enabled()


@contextlib.contextmanager
def fast_path(enabled: bool = True) -> Iterator[None]:
    """Turn cnnlstm's fast path on or off inside the ``with`` block (this thread or task only).

    Off, every ``TimeDistributed`` runs its per-frame module exactly as written on the folded frames ``(N*T, *in)``:
    the plain PyTorch module, no folded copy, no fused kernels, no change of memory format.

    >>> import torch, cnnlstm
    >>> td = cnnlstm.TimeDistributed(torch.nn.Conv2d(3, 4, 3))
    >>> with cnnlstm.fast_path(False):
    ...     td(torch.zeros(1, 2, 3, 8, 8)).shape
    torch.Size([1, 2, 4, 6, 6])
    """
    token = _CHOSEN.set(bool(enabled))
    try:
        yield
    finally:
        _CHOSEN.reset(token)


def once_differentiable(backward):
    """``torch.autograd.function.once_differentiable`` whose error, when a second backward reaches it, names the
    switch (:data:`DOUBLE_BACKWARD`) instead of "trying to differentiate twice"."""

    @functools.wraps(backward)
    def wrapper(ctx, *args):
        with torch.no_grad():
            outputs = backward(ctx, *args)
        if not torch.is_grad_enabled():
            return outputs
        tensors = outputs if isinstance(outputs, tuple) else (outputs,)
        # what the gradients depend on: the incoming gradients, and what forward saved (a gradient penalty's input)
        saved = [t for t in getattr(ctx, "saved_tensors", ()) if isinstance(t, torch.Tensor)]
        needs = [a for a in (*args, *saved) if isinstance(a, torch.Tensor) and a.requires_grad]
        if not needs:
            return outputs
        # each gradient it returns gets a grad_fn that raises when differentiated again
        out = [_Refuse.apply(t, *needs) if isinstance(t, torch.Tensor) else t for t in tensors]
        return tuple(out) if isinstance(outputs, tuple) else out[0]

    return wrapper


class _Refuse(torch.autograd.Function):
    """The identity on ``t`` (a copy), tied to ``needs`` (what made the incoming gradients), whose backward raises
    :data:`DOUBLE_BACKWARD`."""

    @staticmethod
    def forward(ctx, t, *needs):
        return t.clone()

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(DOUBLE_BACKWARD)
