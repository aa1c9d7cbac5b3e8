"""Turn a shape failure deep inside PyTorch into one clear :class:`ShapeError`.

:func:`diagnosed` is the one place where "run; on failure, diagnose" is written: ``infer``
and ``explain`` run their dry run under it, and public forwards run under
:func:`shape_guard`, its narrow form. When the block fails, the same module is run again
on ``meta`` tensors of the same shapes with :func:`~cnnlstm.shapes.doctor.diagnose`; if
that finds a shape mistake the user sees the diagnosis (module, shape got, shape wanted,
fix) as a ``ShapeError`` instead of the PyTorch trace. Any other error passes through.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from ..errors import CnnlstmError, ShapeError
from ._dry import diagnosing
from .doctor import diagnose
from .findings import Finding

__all__ = ["diagnosed", "shape_guard"]

_SHAPE_WORDS = ("shape", "size", "dimension", "channels", "mat1", "expected input")


@contextlib.contextmanager
def diagnosed(
    module: nn.Module,
    shape: tuple,
    *,
    catch: type[Exception] | tuple[type[Exception], ...] = Exception,
    shape_words: bool = False,
    **diagnose_kwargs,
) -> Iterator[None]:
    """Run the block; when it raises ``catch``, raise what :func:`diagnose` finds as a :class:`ShapeError`.

    Errors of cnnlstm's own pass through, and so does the original error when the
    diagnosis finds nothing (or fails itself), or when a guard runs inside a dry run
    (the dry run around it diagnoses).

    Args:
        module: the module whose forward runs inside the block.
        shape: its input's shape (None for an unknown size).
        catch: the errors to diagnose.
        shape_words: diagnose only failures the doctor has a rule for, or whose message
            speaks of shapes (for real forwards, where other errors are the user's own).
        diagnose_kwargs: passed to :func:`diagnose` (``name``, ``dtype``, the forward's kwargs).
    """
    try:
        yield
    except CnnlstmError:
        raise
    except catch as e:
        if diagnosing():
            raise
        try:
            err = diagnose(module, tuple(shape), **diagnose_kwargs).error
        except Exception:  # the diagnosis itself failed: keep the original error
            raise e from None
        if err is None or (shape_words and not _about_shapes(err)):
            raise
        raise ShapeError(str(err)) from None


def _about_shapes(err: Finding) -> bool:
    return err.known or any(w in err.problem.lower() for w in _SHAPE_WORDS)


@contextlib.contextmanager
def shape_guard(module: nn.Module, shape: tuple, name: str | None = None, **kwargs) -> Iterator[None]:
    """Run a forward pass; on a PyTorch shape failure raise a diagnosed :class:`ShapeError`.

    Args:
        module: the module whose forward runs inside the block.
        shape: its input's shape.
        name: what to call the module in the message (default: its class name).
        kwargs: further keyword arguments of the forward, passed to the dry run.
    """
    with diagnosed(
        module, shape, catch=(RuntimeError, ValueError), shape_words=True, name=name or type(module).__name__, **kwargs
    ):
        yield
