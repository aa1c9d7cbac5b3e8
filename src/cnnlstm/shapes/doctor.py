"""``diagnose``: run a module on ``meta`` tensors and report the first shape mistake with its fix.

The rules live in a table keyed by module type (:data:`RULES`); each is a small function in
:mod:`cnnlstm.shapes.rules`. A module is checked by the rule of the first class in its MRO
that the table names, so subclasses of ``nn.LSTM`` or ``nn.Conv2d`` are checked too. A module
that declares ``reads_maps`` (cnnlstm's ConvLSTM, which this package does not import) is checked
as a recurrence over maps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._dry import check_shape, first_paths, first_tensor_shape, hooked, placeholders, run, shapes_of
from .findings import Diagnosis, Finding
from .rules import (
    Context,
    StepReads,
    Stop,
    check_conv1d,
    check_conv2d,
    check_linear,
    check_maps_rnn,
    check_rnn,
    passes_lengths,
    per_step_output,
)

__all__ = ["RULES", "diagnose"]

Rule = Callable[[Context, str, nn.Module, Any], None]

RULES: dict[type[nn.Module], Rule] = {
    nn.RNNBase: check_rnn,
    nn.Conv2d: check_conv2d,
    nn.Conv1d: check_conv1d,
    nn.Linear: check_linear,
}


def rule_for(module: nn.Module) -> Rule | None:
    """The rule of the first class in ``module``'s MRO that :data:`RULES` names; for a module that declares
    ``reads_maps``, the rule of a recurrence over maps; else None."""
    if getattr(module, "reads_maps", False):
        return check_maps_rnn
    return next((RULES[cls] for cls in type(module).__mro__ if cls in RULES), None)


def diagnose(
    module: nn.Module,
    input_shape: tuple,
    *,
    lengths: Any = None,
    dtype: torch.dtype = torch.float32,
    name: str | None = None,
    **kwargs,
) -> Diagnosis:
    """Run ``module`` on ``meta`` tensors and report the first shape mistake with its fix.

    It never raises on the user's mistake: the result says what was found.

    Args:
        module: any module (a whole model or one layer).
        input_shape: the full input shape, batch first, e.g. ``(8, 16, 3, 112, 112)``.
        lengths: optional ``(N,)`` valid lengths of a padded batch; passed as ``lengths=``
            when the forward takes it, and used to find reads of padded steps.
        dtype: the input's dtype.
        name: what to call the root module in messages.
        kwargs: further keyword arguments of the forward.

    Returns:
        A :class:`Diagnosis`: ``ok``, ``error`` (the first mistake), ``warnings`` (silent
        traps PyTorch lets through), ``output`` (the output shape when it ran).

    >>> import torch.nn as nn
    >>> print(diagnose(nn.LSTM(300, 64, batch_first=True), (8, 16, 100)).error.fix)
    Build it with input_size=100.
    """
    shape = placeholders(check_shape(input_shape, "diagnose"))
    if lengths is not None:
        lengths = torch.as_tensor(lengths).long()
    modules = dict(module.named_modules(remove_duplicate=False))
    ctx = Context(batch=shape[0] if shape else None, lengths=lengths, names=first_paths(module), modules=modules)
    call_kwargs = dict(kwargs)
    if lengths is not None and passes_lengths(ctx, module, name or type(module).__name__, shape):
        call_kwargs["lengths"] = lengths
    result = Diagnosis(ctx.findings)
    handles = hooked(module, _checker(ctx), _recorder(ctx))
    try:
        with StepReads(ctx):
            result.output = shapes_of(run(module, shape, dtype, call_kwargs))
        per_step_output(ctx, result.output)
    except Stop as stop:
        ctx.findings.append(stop.finding)
    except Exception as e:
        ctx.findings.append(_unknown(ctx, module, shape, e))
    finally:
        for h in handles:
            h.remove()
    result.findings = [_rooted(f, name) for f in ctx.findings]
    return result


def _checker(ctx: Context):
    """The forward pre-hook: remember the call, then run the module's rule on its first argument."""

    def pre(m: nn.Module, args: tuple) -> None:
        path = ctx.names.get(id(m), "?")
        ctx.stack.append((path, m, first_tensor_shape(args)))
        rule = rule_for(m)
        if rule is not None:
            rule(ctx, path, m, args[0] if args else None)

    return pre


def _recorder(ctx: Context):
    """The forward hook: forget the call; remember an RNN's output, which later rules look for."""

    def post(m: nn.Module, args: tuple, out: Any) -> None:
        ctx.stack.pop()
        if isinstance(m, nn.RNNBase) and isinstance(out, tuple) and isinstance(out[0], torch.Tensor):
            ctx.last_rnn = (m, out[0].shape)
            ctx.rnn_outputs.append(out[0])

    return post


def _unknown(ctx: Context, module: nn.Module, shape: tuple, e: Exception) -> Finding:
    """A failure no rule foresaw, at the innermost module running: PyTorch's own first line."""
    path, m, got = ctx.stack[-1] if ctx.stack else ("", module, shape)
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return Finding("error", path, type(m).__name__, got, "", message, "", known=False)


def _rooted(f: Finding, name: str | None) -> Finding:
    """Call the root module (empty path) by ``name`` where one was given."""
    if not f.path and name:
        f.module = name
    return f
