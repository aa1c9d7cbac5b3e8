"""The meta dry run every part of the shape doctor stands on.

A dry run swaps every parameter and buffer for a ``meta`` tensor of the same shape
(:func:`torch.func.functional_call`), so it costs no FLOPs and no memory, works on any
``nn.Module`` (torchvision and timm models included), and leaves the module untouched.
A thread-local depth marks the run, so that a :func:`~cnnlstm.shapes.guard.shape_guard`
inside it lets the failure through instead of diagnosing again.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ..errors import ShapeError

_state = threading.local()


def diagnosing() -> bool:
    """True while a dry run is under way on this thread."""
    return getattr(_state, "depth", 0) > 0


@contextlib.contextmanager
def dry_run() -> Iterator[None]:
    """Mark a dry run, so that guards inside it do not diagnose again."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


def meta_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``module`` as an empty ``meta`` tensor of the same shape."""
    state = {}
    for name, t in [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]:
        if t is not None:
            state[name] = torch.empty_like(t, device="meta")
    return state


def run(module: nn.Module, shape: tuple, dtype: torch.dtype, kwargs: dict) -> Any:
    """``module``'s forward on an empty ``meta`` input of ``shape``, its state swapped for meta tensors."""
    x = torch.empty(shape, device="meta", dtype=dtype)
    with dry_run(), torch.no_grad():
        return functional_call(module, meta_state(module), (x,), kwargs, strict=False)


def check_shape(input_shape: Any, owner: str) -> tuple:
    """``input_shape`` as a tuple of positive ints (or None), else a :class:`ShapeError` naming ``owner``; a tensor
    or an array stands for its shape."""
    if hasattr(input_shape, "shape") and not isinstance(input_shape, tuple):
        input_shape = tuple(int(s) for s in input_shape.shape)
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ShapeError(
            f"{owner}: input_shape must be a tuple of sizes like (8, 16, 3, 112, 112), got {input_shape!r}"
        ) from None
    for s in shape:
        if s is not None and (not isinstance(s, int) or isinstance(s, bool) or s < 1):
            shown = repr(shape) if len(repr(shape)) <= 200 else repr(shape)[:200] + "..."
            raise ShapeError(f"{owner}: every size in input_shape must be a positive int (or None), got {shown}")
    return shape


def placeholders(shape: tuple, value: int = 5) -> tuple:
    """``shape`` with every unknown size (None) set to ``value``."""
    return tuple(value if s is None else s for s in shape)


def first_paths(module: nn.Module) -> dict[int, str]:
    """Each submodule's first path (a module used in two places is named where it first appears)."""
    names: dict[int, str] = {}
    for p, m in module.named_modules(remove_duplicate=False):
        names.setdefault(id(m), p)
    return names


def hooked(module: nn.Module, pre, post) -> list:
    """Register ``pre`` and ``post`` forward hooks on every distinct submodule; returns the handles."""
    handles = []
    for m in {id(m): m for m in module.modules()}.values():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    return handles


def shapes_of(out: Any) -> Any:
    """Shapes of a forward's output: a torch.Size for a tensor, nested tuples for tuples."""
    if isinstance(out, torch.Tensor):
        return out.shape
    if isinstance(out, nn.utils.rnn.PackedSequence):
        return out.data.shape
    if isinstance(out, (tuple, list)):
        return tuple(shapes_of(o) for o in out)
    if isinstance(out, dict):
        return {k: shapes_of(v) for k, v in out.items()}
    return None


def first_tensor_shape(args: Any) -> Any:
    """The shape of a call's first tensor argument (of its packed data; of a tuple's members)."""
    for a in args if isinstance(args, (tuple, list)) else (args,):
        if isinstance(a, torch.Tensor):
            return a.shape
        if isinstance(a, nn.utils.rnn.PackedSequence):
            return a.data.shape
        if isinstance(a, (tuple, list)):
            return shapes_of(a)
    return None


def merge_unknown(a: Any, b: Any) -> Any:
    """Where two dry runs with different placeholder sizes disagree, the size is unknown (None)."""
    if isinstance(a, torch.Size) and isinstance(b, torch.Size) and len(a) == len(b):
        merged = tuple(x if x == y else None for x, y in zip(a, b))
        return torch.Size(merged) if None not in merged else merged
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        return tuple(merge_unknown(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: merge_unknown(v, b.get(k)) for k, v in a.items()}
    return a
