"""The shape doctor: ``infer``, ``explain`` and ``diagnose``, all by dry runs on ``meta``.

A dry run swaps every parameter and buffer for a ``meta`` tensor of the same shape
(:func:`torch.func.functional_call`), so it costs no FLOPs and no memory, works on any
``nn.Module`` (torchvision and timm models included), and leaves the module untouched.

>>> import torch.nn as nn
>>> infer(nn.Conv2d(3, 8, 3, stride=2), (1024, 3, 1024, 1024))
torch.Size([1024, 8, 511, 511])
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from ._guard import dry_run
from ._messages import clip_maps_fix, image_maps_fix
from .errors import CnnlstmError, ShapeError

__all__ = ["Diagnosis", "Explanation", "Finding", "Row", "diagnose", "explain", "infer"]

Shape = tuple


# ----------------------------------------------------------------------------- dry runs


def _meta_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``module`` as an empty ``meta`` tensor of the same shape."""
    state = {}
    for name, t in [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]:
        if t is not None:
            state[name] = torch.empty_like(t, device="meta")
    return state


def _first_paths(module: nn.Module) -> dict[int, str]:
    """Each submodule's first path (a module used in two places is named where it first appears)."""
    names: dict[int, str] = {}
    for p, m in module.named_modules(remove_duplicate=False):
        names.setdefault(id(m), p)
    return names


def _check_shape(input_shape: Any, owner: str) -> tuple:
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ShapeError(
            f"{owner}: input_shape must be a tuple of sizes like (8, 16, 3, 112, 112), got {input_shape!r}"
        ) from None
    for s in shape:
        if s is not None and (not isinstance(s, int) or isinstance(s, bool) or s < 1):
            raise ShapeError(f"{owner}: every size in input_shape must be a positive int (or None), got {shape}")
    return shape


def _run(module: nn.Module, shape: tuple, dtype: torch.dtype, kwargs: dict) -> Any:
    x = torch.empty(shape, device="meta", dtype=dtype)
    with dry_run(), torch.no_grad():
        return functional_call(module, _meta_state(module), (x,), kwargs, strict=False)


def _shapes_of(out: Any) -> Any:
    """Shapes of a forward's output: a torch.Size for a tensor, nested tuples for tuples."""
    if isinstance(out, torch.Tensor):
        return out.shape
    if isinstance(out, nn.utils.rnn.PackedSequence):
        return out.data.shape
    if isinstance(out, (tuple, list)):
        return tuple(_shapes_of(o) for o in out)
    if isinstance(out, dict):
        return {k: _shapes_of(v) for k, v in out.items()}
    return None


def _placeholders(shape: tuple, value: int) -> tuple:
    return tuple(value if s is None else s for s in shape)


def _merge_unknown(a: Any, b: Any) -> Any:
    """Where two dry runs with different placeholder sizes disagree, the size is unknown (None)."""
    if isinstance(a, torch.Size) and isinstance(b, torch.Size) and len(a) == len(b):
        merged = tuple(x if x == y else None for x, y in zip(a, b))
        return torch.Size(merged) if None not in merged else merged
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        return tuple(_merge_unknown(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _merge_unknown(v, b.get(k)) for k, v in a.items()}
    return a


def infer(module: nn.Module, input_shape: tuple, *, dtype: torch.dtype = torch.float32, **kwargs) -> Any:
    """The output shape of ``module`` for an input of ``input_shape``, by a dry run on ``meta``.

    Args:
        module: any module.
        input_shape: the full input shape, batch included; ``None`` marks a size that may
            vary (the time axis, say), reported as ``None`` where it reaches the output.
        dtype: the input's dtype.
        kwargs: further keyword arguments of the module's forward.

    Returns:
        A ``torch.Size`` for a tensor output (a tuple with ``None`` for unknown sizes),
        nested tuples of them for tuple outputs (an LSTM's ``(out, (h, c))``).

    Raises:
        ShapeError: the module cannot take that shape; the message is the diagnosis.
    """
    shape = _check_shape(input_shape, "infer")
    try:
        out = _shapes_of(_run(module, _placeholders(shape, 5), dtype, kwargs))
        if None in shape:
            out = _merge_unknown(out, _shapes_of(_run(module, _placeholders(shape, 7), dtype, kwargs)))
        return out
    except CnnlstmError:
        raise
    except Exception:
        result = diagnose(module, _placeholders(shape, 5), dtype=dtype, **kwargs)
        if result.error is None:
            raise
        raise ShapeError(str(result.error)) from None


# ----------------------------------------------------------------------------- explain


@dataclass
class Row:
    """One module call of an :func:`explain` table."""

    path: str
    type: str
    input: Any
    output: Any
    params: int
    depth: int
    calls: int = 1


def _fmt(shape: Any) -> str:
    if shape is None:
        return "-"
    if isinstance(shape, (torch.Size, tuple)) and all(isinstance(s, int) or s is None for s in shape):
        return "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
    if isinstance(shape, tuple):
        return "(" + ", ".join(_fmt(s) for s in shape) + ")"
    return str(shape)


def _first_tensor_shape(args: Any) -> Any:
    for a in args if isinstance(args, (tuple, list)) else (args,):
        if isinstance(a, torch.Tensor):
            return a.shape
        if isinstance(a, nn.utils.rnn.PackedSequence):
            return a.data.shape
        if isinstance(a, (tuple, list)):
            return _shapes_of(a)
    return None


@dataclass
class Explanation:
    """The :func:`explain` table: ``rows`` in call order, printable with ``str()``."""

    rows: list[Row]
    output: Any

    @property
    def total_params(self) -> int:
        return self.rows[0].params if self.rows else 0

    def __str__(self) -> str:
        header = ("module", "type", "input", "output", "params")
        body = [
            (
                "  " * r.depth + (r.path or "(model)"),
                r.type + (f" x{r.calls}" if r.calls > 1 else ""),
                _fmt(r.input),
                _fmt(r.output),
                f"{r.params:,}",
            )
            for r in self.rows
        ]
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(5)]
        lines = [
            "  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
            for line in [header, *body]
        ]
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join(lines)


def explain(model: nn.Module, input_shape: tuple, *, dtype: torch.dtype = torch.float32, **kwargs) -> Explanation:
    """A table, one row per module call: path, type, input shape, output shape, parameters.

    Args:
        model: any module.
        input_shape: the full input shape, batch included.
        kwargs: further keyword arguments of the forward.

    >>> print(explain(nn.Sequential(nn.Linear(4, 8), nn.ReLU()), (2, 4)))
    module   type        input   output  params
    -------------------------------------------
    (model)  Sequential  (2, 4)  (2, 8)      40
      0      Linear      (2, 4)  (2, 8)      40
      1      ReLU        (2, 8)  (2, 8)       0
    """
    shape = _check_shape(input_shape, "explain")
    rows: dict[int, Row] = {}
    names = _first_paths(model)

    def pre(m: nn.Module, args: tuple) -> None:
        if id(m) in rows:
            rows[id(m)].calls += 1
            return
        path = names.get(id(m), "?")
        rows[id(m)] = Row(
            path,
            type(m).__name__,
            _first_tensor_shape(args),
            None,
            sum(p.numel() for p in m.parameters()),
            path.count(".") + (1 if path else 0),
        )

    def post(m: nn.Module, args: tuple, out: Any) -> None:
        if rows[id(m)].output is None:
            rows[id(m)].output = _shapes_of(out)

    handles = []
    for m in {id(m): m for m in model.modules()}.values():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    try:
        out = _run(model, _placeholders(shape, 5), dtype, kwargs)
    except CnnlstmError:
        raise
    except Exception:
        result = diagnose(model, _placeholders(shape, 5), dtype=dtype, **kwargs)
        if result.error is None:
            raise
        raise ShapeError(str(result.error)) from None
    finally:
        for h in handles:
            h.remove()
    return Explanation(list(rows.values()), _shapes_of(out))


# ----------------------------------------------------------------------------- diagnose


@dataclass
class Finding:
    """One mistake (``severity="error"``) or silent trap (``"warning"``) found by :func:`diagnose`."""

    severity: str
    path: str
    module: str
    got: Any
    wants: str
    problem: str
    fix: str
    known: bool = True  # False: a failure the doctor has no rule for (PyTorch's own message)

    def __str__(self) -> str:
        where = f"{self.module} '{self.path}'" if self.path else self.module
        wants = f" wants {self.wants}," if self.wants else ""
        return f"{where}{wants} got {_fmt(self.got)}: {self.problem}. {self.fix}".rstrip()


@dataclass
class Diagnosis:
    """What :func:`diagnose` found. ``ok`` is True when nothing stops the model from running."""

    findings: list[Finding] = field(default_factory=list)
    output: Any = None

    @property
    def error(self) -> Finding | None:
        return next((f for f in self.findings if f.severity == "error"), None)

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return self.error is None

    def __str__(self) -> str:
        if not self.findings:
            return f"ok: output {_fmt(self.output)}"
        lines = [f"{f.severity}: {f}" for f in self.findings]
        if self.ok:
            lines.insert(0, f"runs: output {_fmt(self.output)}, with {len(self.findings)} warning(s)")
        return "\n".join(lines)


class _Stop(Exception):
    def __init__(self, finding: Finding):
        self.finding = finding


@dataclass
class _Context:
    batch: int | None
    lengths: torch.Tensor | None
    names: dict[int, str]
    modules: dict[str, nn.Module]
    findings: list[Finding] = field(default_factory=list)
    stack: list[tuple[str, nn.Module, Any]] = field(default_factory=list)
    last_rnn: tuple[nn.RNNBase, torch.Size] | None = None
    rnn_outputs: list[torch.Tensor] = field(default_factory=list)
    per_step_linear: tuple[str, torch.Size] | None = None

    def parent(self, path: str) -> nn.Module | None:
        return self.modules.get(path.rsplit(".", 1)[0] if "." in path else "") if path else None


def _check_rnn(ctx: _Context, path: str, m: nn.RNNBase, x: Any) -> None:
    kind = m.mode if m.mode in ("LSTM", "GRU") else "RNN"
    bf = m.batch_first
    wants = f"(N, T, F={m.input_size}) with batch_first=True" if bf else f"(T, N, F={m.input_size})"
    if isinstance(x, nn.utils.rnn.PackedSequence):
        if x.data.shape[-1] != m.input_size:
            raise _Stop(
                Finding(
                    "error",
                    path,
                    kind,
                    tuple(x.data.shape),
                    wants,
                    f"packed steps have F={x.data.shape[-1]}",
                    f"Build it with input_size={x.data.shape[-1]}.",
                )
            )
        return
    if not isinstance(x, torch.Tensor):
        return
    s = tuple(x.shape)
    if x.dim() == 5:
        raise _Stop(
            Finding(
                "error",
                path,
                kind,
                s,
                wants,
                "a clip of feature maps",
                clip_maps_fix(s, m.input_size),
            )
        )
    if x.dim() == 4:
        raise _Stop(
            Finding(
                "error",
                path,
                kind,
                s,
                wants,
                "an image's feature maps (N, C, H, W)",
                image_maps_fix(s),
            )
        )
    if x.shape[-1] != m.input_size:
        fix = f"Build it with input_size={x.shape[-1]}"
        if x.dim() == 3 and x.shape[1] == m.input_size:
            fix = (
                f"The features are on axis 1: x.transpose(1, 2) gives (N, T, F) = ({s[0]}, {s[2]}, {s[1]}); "
                f"or build it with input_size={x.shape[-1]}"
            )
        raise _Stop(Finding("error", path, kind, s, wants, f"F={x.shape[-1]} but input_size={m.input_size}", fix + "."))
    if x.dim() == 2:
        ctx.findings.append(
            Finding(
                "warning",
                path,
                kind,
                s,
                wants,
                f"a 2-D tensor is taken as ONE unbatched sequence of {s[0]} steps, not a batch",
                f"If this is a batch of {s[0]} vectors, add the time axis: x.unsqueeze(1) gives ({s[0]}, 1, {s[1]}).",
            )
        )
        return
    if ctx.batch is not None:
        if not bf and s[0] == ctx.batch and s[1] != ctx.batch:
            ctx.findings.append(
                Finding(
                    "warning",
                    path,
                    kind,
                    s,
                    wants,
                    f"batch_first=False, so axis 0 (size {s[0]}, the batch) is taken as time "
                    f"and the {s[1]} steps as the batch",
                    f"Build it with batch_first=True, or pass x.transpose(0, 1) = ({s[1]}, {s[0]}, {s[2]}).",
                )
            )
        elif bf and s[1] == ctx.batch and s[0] != ctx.batch:
            ctx.findings.append(
                Finding(
                    "warning",
                    path,
                    kind,
                    s,
                    wants,
                    f"axis 1 holds the batch (size {s[1]}) but batch_first=True takes axis 0 as the batch",
                    f"Pass x.transpose(0, 1) = ({s[1]}, {s[0]}, {s[2]}), or build it with batch_first=False.",
                )
            )
    if ctx.lengths is not None and not _is_cnnlstm_temporal(ctx.parent(path)):
        t = s[1] if bf else s[0]
        short = int((ctx.lengths < t).sum())
        if short:
            ctx.findings.append(
                Finding(
                    "warning",
                    path,
                    kind,
                    s,
                    wants,
                    f"{short} of the sequences are padded (lengths {ctx.lengths.tolist()} < T={t}) "
                    "but it runs over the padding",
                    "Pack them: nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False), "
                    "or use cnnlstm.CNNLSTM / cnnlstm.Temporal, which take lengths=.",
                )
            )


def _is_cnnlstm_temporal(m: nn.Module | None) -> bool:
    from .layers.temporal import Temporal

    return isinstance(m, Temporal)


def _check_conv(path: str, m: nn.Module, x: Any, dims: int) -> None:
    if not isinstance(x, torch.Tensor):
        return
    kind = type(m).__name__
    s = tuple(x.shape)
    c = m.in_channels
    if dims == 2:
        wants = f"(N, C={c}, H, W)"
        if x.dim() == 5:
            fix = "Wrap it in cnnlstm.TimeDistributed(...), which folds time into the batch: (N*T, C, H, W)"
            if s[2] != c and s[-1] == c:
                fix += ", and give the clip as (N, T, C, H, W): x.permute(0, 1, 4, 2, 3) (or layout='NTHWC' in CNNLSTM)"
            raise _Stop(
                Finding("error", path, kind, s, wants, "a 5-D clip; Conv2d takes one batch of images", fix + ".")
            )
        if x.dim() == 4 and s[1] != c:
            if s[-1] == c:
                raise _Stop(
                    Finding(
                        "error",
                        path,
                        kind,
                        s,
                        wants,
                        f"channels last (N, H, W, C) with C={c} on axis 3",
                        f"Permute to (N, C, H, W): x.permute(0, 3, 1, 2) gives ({s[0]}, {s[3]}, {s[1]}, {s[2]}) "
                        "(or layout='NHWC'/'NTHWC' in CNNLSTM).",
                    )
                )
            raise _Stop(
                Finding(
                    "error",
                    path,
                    kind,
                    s,
                    wants,
                    f"C={s[1]} channels but in_channels={c}",
                    f"Build it with in_channels={s[1]}, or feed {c}-channel frames.",
                )
            )
        if x.dim() not in (3, 4):
            raise _Stop(
                Finding("error", path, kind, s, wants, f"a {x.dim()}-D tensor", "Give a batch of images (N, C, H, W).")
            )
    else:
        wants = f"(N, C={c}, T)"
        if x.dim() == 3 and s[1] != c:
            if s[2] == c:
                raise _Stop(
                    Finding(
                        "error",
                        path,
                        kind,
                        s,
                        wants,
                        f"a series (N, T, F) with its F={c} features last",
                        f"Transpose to (N, F, T): x.transpose(1, 2) gives ({s[0]}, {s[2]}, {s[1]}).",
                    )
                )
            raise _Stop(
                Finding(
                    "error",
                    path,
                    kind,
                    s,
                    wants,
                    f"C={s[1]} channels but in_channels={c}",
                    f"Build it with in_channels={s[1]}.",
                )
            )
        if x.dim() not in (2, 3):
            raise _Stop(Finding("error", path, kind, s, wants, f"a {x.dim()}-D tensor", "Give series as (N, C, T)."))


def _check_linear(ctx: _Context, path: str, m: nn.Linear, x: Any) -> None:
    wants = f"(..., {m.in_features})"
    if isinstance(x, tuple):
        raise _Stop(
            Finding(
                "error",
                path,
                "Linear",
                _shapes_of(x),
                wants,
                "the RNN's whole output tuple (output, state)",
                "Unpack it: out, _ = rnn(x), then out[:, -1] for the last step (N, D), or use head='last'.",
            )
        )
    if not isinstance(x, torch.Tensor):
        return
    s = tuple(x.shape)
    f = s[-1]
    rnn = ctx.last_rnn
    if f != m.in_features:
        if rnn is not None:
            r, out_shape = rnn
            d = r.hidden_size
            if r.bidirectional and f == 2 * d and m.in_features == d:
                raise _Stop(
                    Finding(
                        "error",
                        path,
                        "Linear",
                        s,
                        wants,
                        f"the bidirectional {r.mode} gives 2*D={2 * d} features per step, not D={d}",
                        f"Build it with in_features={2 * d} (2 * hidden_size).",
                    )
                )
            if x.dim() == 2 and f == out_shape[1] * out_shape[2] and m.in_features == out_shape[2]:
                raise _Stop(
                    Finding(
                        "error",
                        path,
                        "Linear",
                        s,
                        wants,
                        "the RNN's whole sequence, flattened",
                        "Take the last step: out[:, -1] gives (N, D) "
                        f"= ({out_shape[0]}, {out_shape[2]}); or use head='last'.",
                    )
                )
        raise _Stop(
            Finding(
                "error",
                path,
                "Linear",
                s,
                wants,
                f"{f} features but in_features={m.in_features}",
                f"Build it with in_features={f}.",
            )
        )
    if rnn is not None and x.dim() == 3 and any(x is o for o in ctx.rnn_outputs):
        from .layers.temporal import PerStep

        if not isinstance(ctx.parent(path), PerStep):
            ctx.per_step_linear = (path, torch.Size((*s[:-1], m.out_features)))


class _StepReads(TorchFunctionMode):
    """Watches indexing of RNN outputs: ``out[:, -1]`` on a padded batch reads padding."""

    def __init__(self, ctx: _Context):
        super().__init__()
        self.ctx = ctx

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        ctx = self.ctx
        if func is torch.Tensor.__getitem__ and ctx.lengths is not None and ctx.rnn_outputs and ctx.stack:
            t, idx = args[0], args[1]
            if any(t is o for o in ctx.rnn_outputs) and isinstance(idx, tuple) and len(idx) >= 2:
                steps = t.shape[1]
                step = idx[1]
                if isinstance(step, int) and step in (-1, steps - 1) and bool((ctx.lengths < steps).any()):
                    path, m, _ = ctx.stack[-1]
                    ctx.findings.append(
                        Finding(
                            "warning",
                            path,
                            type(m).__name__,
                            tuple(t.shape),
                            "",
                            f"reads step {step} of every sequence, but the padded ones "
                            f"(lengths {ctx.lengths.tolist()}) end earlier: that step is padding",
                            "Gather each sequence's last valid step: out[torch.arange(N), lengths - 1], "
                            "or use cnnlstm's head='last' with lengths=.",
                        )
                    )
        return func(*args, **kwargs)


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
    shape = _placeholders(_check_shape(input_shape, "diagnose"), 5)
    if lengths is not None:
        lengths = torch.as_tensor(lengths).long()
    names = _first_paths(module)
    modules = dict(module.named_modules(remove_duplicate=False))
    ctx = _Context(batch=shape[0] if shape else None, lengths=lengths, names=names, modules=modules)
    root = name or type(module).__name__

    def pre(m: nn.Module, args: tuple) -> None:
        path = names.get(id(m), "?")
        x = args[0] if args else None
        ctx.stack.append((path, m, _first_tensor_shape(args)))
        if isinstance(m, nn.RNNBase):
            _check_rnn(ctx, path, m, x)
        elif isinstance(m, nn.Conv2d):
            _check_conv(path, m, x, 2)
        elif isinstance(m, nn.Conv1d):
            _check_conv(path, m, x, 1)
        elif isinstance(m, nn.Linear):
            _check_linear(ctx, path, m, x)

    def post(m: nn.Module, args: tuple, out: Any) -> None:
        ctx.stack.pop()
        if isinstance(m, nn.RNNBase) and isinstance(out, tuple) and isinstance(out[0], torch.Tensor):
            ctx.last_rnn = (m, out[0].shape)
            ctx.rnn_outputs.append(out[0])

    call_kwargs = dict(kwargs)
    if lengths is not None:
        try:
            takes_lengths = "lengths" in inspect.signature(module.forward).parameters
        except (TypeError, ValueError):
            takes_lengths = False
        if takes_lengths:
            call_kwargs["lengths"] = lengths
        else:
            ctx.findings.append(
                Finding(
                    "warning",
                    "",
                    root,
                    shape,
                    "",
                    "its forward takes no lengths, so padded steps are treated as data",
                    "Give it a lengths argument and pack the padded batch (or use cnnlstm.CNNLSTM).",
                )
            )

    handles = []
    for m in {id(m): m for m in module.modules()}.values():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    result = Diagnosis(ctx.findings)
    try:
        with _StepReads(ctx):
            out = _run(module, shape, dtype, call_kwargs)
        result.output = _shapes_of(out)
        if ctx.per_step_linear is not None and result.output == ctx.per_step_linear[1]:
            path, s = ctx.per_step_linear
            ctx.findings.append(
                Finding(
                    "warning",
                    path,
                    "Linear",
                    s,
                    "",
                    "it is applied to every step of the RNN's output, so the model returns one output per step",
                    "For one label per sequence take the last step first: out[:, -1]; for frame labels this is right.",
                )
            )
    except _Stop as stop:
        ctx.findings.append(stop.finding)
    except Exception as e:
        path, m, got = ctx.stack[-1] if ctx.stack else ("", module, shape)
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        ctx.findings.append(Finding("error", path, type(m).__name__, got, "", message, "", known=False))
    finally:
        for h in handles:
            h.remove()
    result.findings = [_rooted(f, name) for f in ctx.findings]
    return result


def _rooted(f: Finding, name: str | None) -> Finding:
    """Call the root module (empty path) by ``name`` where one was given."""
    if not f.path and name:
        f.module = name
    return f
