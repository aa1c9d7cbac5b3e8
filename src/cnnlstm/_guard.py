"""Turn a shape failure deep inside PyTorch into one clear :class:`ShapeError`.

Public entry points run their body under :func:`shape_guard`. When PyTorch raises a
``RuntimeError`` the guard re-runs the same module on ``meta`` tensors of the same shapes
with :func:`cnnlstm.diagnose`; if that finds a shape mistake, the user sees the diagnosis
(module, shape got, shape wanted, fix) as a ``ShapeError`` instead of the PyTorch trace.
Any other error passes through untouched.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from torch import nn

from .errors import CnnlstmError, ShapeError

_state = threading.local()
_SHAPE_WORDS = ("shape", "size", "dimension", "channels", "mat1", "expected input")


def diagnosing() -> bool:
    """True while a diagnosis dry run is under way on this thread."""
    return getattr(_state, "depth", 0) > 0


@contextlib.contextmanager
def dry_run() -> Iterator[None]:
    """Mark a diagnosis dry run, so that guards inside it do not diagnose again."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


@contextlib.contextmanager
def shape_guard(module: nn.Module, shape: tuple, name: str | None = None, **kwargs) -> Iterator[None]:
    """Run a forward pass; on a PyTorch shape failure raise a diagnosed :class:`ShapeError`.

    Args:
        module: the module whose forward runs inside the block.
        shape: its input's shape.
        name: what to call the module in the message (default: its class name).
        kwargs: further keyword arguments of the forward, passed to the dry run.
    """
    try:
        yield
    except (RuntimeError, ValueError) as e:
        if diagnosing() or isinstance(e, CnnlstmError):
            raise
        from .shapes import diagnose

        try:
            result = diagnose(module, tuple(shape), name=name or type(module).__name__, **kwargs)
        except Exception:  # the diagnosis itself failed: keep the original error
            raise e from None
        err = result.error
        if err is None or not (err.known or any(w in err.problem.lower() for w in _SHAPE_WORDS)):
            raise
        raise ShapeError(str(result.error)) from None
