"""The doctor's rules: small functions, one per kind of module, that turn a bad input into a :class:`Finding`.

Each rule is called ``rule(ctx, path, module, x)`` just before ``module`` runs on ``x``
inside the dry run. A mistake that stops the model raises :class:`Stop`; a silent trap
that PyTorch lets through is added to ``ctx.findings`` as a warning. Rules learn about
cnnlstm's own layers from attributes the layers declare, never by importing them:
``takes_lengths`` (the module's forward takes ``lengths=`` and keeps padded steps out),
``per_step`` (a head that gives one output per step on purpose) and ``reads_maps`` (a recurrence over
maps ``(N, T, C, H, W)``, a ConvLSTM, with its ``in_channels``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .._messages import clip_maps_fix, image_maps_fix, maps_rnn_problem
from ._dry import shapes_of
from .findings import Finding, Site


class Stop(Exception):
    """Raised by a rule to end the dry run at the first mistake."""

    def __init__(self, finding: Finding):
        self.finding = finding


@dataclass
class Context:
    """What the rules know and remember during one diagnosis."""

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

    def warn(self, at: Site, problem: str, fix: str) -> None:
        self.findings.append(at.finding(problem, fix, "warning"))


def takes_lengths(module: nn.Module) -> bool:
    """Whether ``module``'s forward takes ``lengths=``: its declared ``takes_lengths``, else its signature."""
    declared = getattr(module, "takes_lengths", None)
    if declared is not None:
        return bool(declared)
    try:
        return "lengths" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------- recurrent layers


def check_rnn(ctx: Context, path: str, m: nn.RNNBase, x: Any) -> None:
    """LSTM, GRU, RNN: the rank, ``F`` and batch axis of the input; padding run over."""
    kind = m.mode if m.mode in ("LSTM", "GRU") else "RNN"
    wants = f"(N, T, F={m.input_size}) with batch_first=True" if m.batch_first else f"(T, N, F={m.input_size})"
    if isinstance(x, nn.utils.rnn.PackedSequence):
        f = x.data.shape[-1]
        if f != m.input_size:
            at = Site(path, kind, tuple(x.data.shape), wants)
            raise Stop(at.finding(f"packed steps have F={f}", f"Build it with input_size={f}."))
        return
    if not isinstance(x, torch.Tensor):
        return
    at = Site(path, kind, tuple(x.shape), wants)
    _rnn_rank_and_features(at, m)
    if x.dim() == 2:
        s = at.got
        ctx.warn(
            at,
            f"a 2-D tensor is taken as ONE unbatched sequence of {s[0]} steps, not a batch",
            f"If this is a batch of {s[0]} vectors, add the time axis: x.unsqueeze(1) gives ({s[0]}, 1, {s[1]}).",
        )
        return
    _rnn_batch_axis(ctx, at, m)
    _rnn_over_padding(ctx, at, m)


def _rnn_rank_and_features(at: Site, m: nn.RNNBase) -> None:
    s = at.got
    if len(s) == 5:
        raise Stop(at.finding("a clip of feature maps", clip_maps_fix(s, m.input_size)))
    if len(s) == 4:
        raise Stop(at.finding("an image's feature maps (N, C, H, W)", image_maps_fix(s)))
    if s[-1] != m.input_size:
        fix = f"Build it with input_size={s[-1]}"
        if len(s) == 3 and s[1] == m.input_size:
            fix = (
                f"The features are on axis 1: x.transpose(1, 2) gives (N, T, F) = ({s[0]}, {s[2]}, {s[1]}); "
                f"or build it with input_size={s[-1]}"
            )
        raise Stop(at.finding(f"F={s[-1]} but input_size={m.input_size}", fix + "."))


def _rnn_batch_axis(ctx: Context, at: Site, m: nn.RNNBase) -> None:
    s, n = at.got, ctx.batch
    if n is None:
        return
    if not m.batch_first and s[0] == n and s[1] != n:
        ctx.warn(
            at,
            f"batch_first=False, so axis 0 (size {s[0]}, the batch) is taken as time and the {s[1]} steps as the batch",
            f"Build it with batch_first=True, or pass x.transpose(0, 1) = ({s[1]}, {s[0]}, {s[2]}).",
        )
    elif m.batch_first and s[1] == n and s[0] != n:
        ctx.warn(
            at,
            f"axis 1 holds the batch (size {s[1]}) but batch_first=True takes axis 0 as the batch",
            f"Pass x.transpose(0, 1) = ({s[1]}, {s[0]}, {s[2]}), or build it with batch_first=False.",
        )


def _rnn_over_padding(ctx: Context, at: Site, m: nn.RNNBase) -> None:
    parent = ctx.parent(at.path)
    if ctx.lengths is None or getattr(parent, "takes_lengths", False):
        return  # a parent that declares takes_lengths packs the padded steps itself
    t = at.got[1] if m.batch_first else at.got[0]
    short = int((ctx.lengths < t).sum())
    if short:
        ctx.warn(
            at,
            f"{short} of the sequences are padded (lengths {ctx.lengths.tolist()} < T={t}) "
            "but it runs over the padding",
            "Pack them: nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False), "
            "or use cnnlstm.CNNLSTM / cnnlstm.Temporal, which take lengths=.",
        )


def check_maps_rnn(ctx: Context, path: str, m: nn.Module, x: Any) -> None:
    """A recurrence over maps (a module that declares ``reads_maps``, e.g. a ConvLSTM): a sequence ``(N, T, F)``
    where it wants ``(N, T, C, H, W)`` (a bridge put before it), one step's maps, channels last, a wrong ``C``."""
    if not isinstance(x, torch.Tensor):
        return
    c = m.in_channels
    found = maps_rnn_problem(tuple(x.shape), c)
    if found is not None:
        raise Stop(Site(path, type(m).__name__, tuple(x.shape), f"(N, T, C={c}, H, W)").finding(*found))


# ----------------------------------------------------------------------------- convolutions


def check_conv2d(ctx: Context, path: str, m: nn.Conv2d, x: Any) -> None:
    """Conv2d: a clip instead of images, channels last, a wrong channel count or rank."""
    if not isinstance(x, torch.Tensor):
        return
    s, c = tuple(x.shape), m.in_channels
    at = Site(path, type(m).__name__, s, f"(N, C={c}, H, W)")
    if x.dim() == 5:
        fix = "Wrap it in cnnlstm.TimeDistributed(...), which folds time into the batch: (N*T, C, H, W)"
        if s[2] != c and s[-1] == c:
            fix += ", and give the clip as (N, T, C, H, W): x.permute(0, 1, 4, 2, 3) (or layout='NTHWC' in CNNLSTM)"
        raise Stop(at.finding("a 5-D clip; Conv2d takes one batch of images", fix + "."))
    if x.dim() == 4 and s[1] != c and s[-1] == c:
        raise Stop(
            at.finding(
                f"channels last (N, H, W, C) with C={c} on axis 3",
                f"Permute to (N, C, H, W): x.permute(0, 3, 1, 2) gives ({s[0]}, {s[3]}, {s[1]}, {s[2]}) "
                "(or layout='NHWC'/'NTHWC' in CNNLSTM).",
            )
        )
    if x.dim() == 4 and s[1] != c:
        raise Stop(
            at.finding(
                f"C={s[1]} channels but in_channels={c}",
                f"Build it with in_channels={s[1]}, or feed {c}-channel frames.",
            )
        )
    if x.dim() not in (3, 4):
        raise Stop(at.finding(f"a {x.dim()}-D tensor", "Give a batch of images (N, C, H, W)."))


def check_conv1d(ctx: Context, path: str, m: nn.Conv1d, x: Any) -> None:
    """Conv1d: a series with its features last, a wrong channel count or rank."""
    if not isinstance(x, torch.Tensor):
        return
    s, c = tuple(x.shape), m.in_channels
    at = Site(path, type(m).__name__, s, f"(N, C={c}, T)")
    if x.dim() == 3 and s[1] != c and s[2] == c:
        raise Stop(
            at.finding(
                f"a series (N, T, F) with its F={c} features last",
                f"Transpose to (N, F, T): x.transpose(1, 2) gives ({s[0]}, {s[2]}, {s[1]}).",
            )
        )
    if x.dim() == 3 and s[1] != c:
        raise Stop(at.finding(f"C={s[1]} channels but in_channels={c}", f"Build it with in_channels={s[1]}."))
    if x.dim() not in (2, 3):
        raise Stop(at.finding(f"a {x.dim()}-D tensor", "Give series as (N, C, T)."))


# ----------------------------------------------------------------------------- linear layers


def check_linear(ctx: Context, path: str, m: nn.Linear, x: Any) -> None:
    """Linear: the RNN's output tuple, a flattened or bidirectional RNN output, a wrong ``in_features``."""
    wants = f"(..., {m.in_features})"
    if isinstance(x, tuple):
        raise Stop(
            Site(path, "Linear", shapes_of(x), wants).finding(
                "the RNN's whole output tuple (output, state)",
                "Unpack it: out, _ = rnn(x), then out[:, -1] for the last step (N, D), or use head='last'.",
            )
        )
    if not isinstance(x, torch.Tensor):
        return
    s = tuple(x.shape)
    at = Site(path, "Linear", s, wants)
    if s[-1] != m.in_features:
        if ctx.last_rnn is not None:
            _linear_after_rnn(at, m, ctx.last_rnn)
        raise Stop(
            at.finding(f"{s[-1]} features but in_features={m.in_features}", f"Build it with in_features={s[-1]}.")
        )
    on_rnn_steps = x.dim() == 3 and any(x is o for o in ctx.rnn_outputs)
    if ctx.last_rnn is not None and on_rnn_steps and not getattr(ctx.parent(path), "per_step", False):
        ctx.per_step_linear = (path, torch.Size((*s[:-1], m.out_features)))


def _linear_after_rnn(at: Site, m: nn.Linear, last_rnn: tuple[nn.RNNBase, torch.Size]) -> None:
    r, out_shape = last_rnn
    s, d = at.got, r.hidden_size
    if r.bidirectional and s[-1] == 2 * d and m.in_features == d:
        raise Stop(
            at.finding(
                f"the bidirectional {r.mode} gives 2*D={2 * d} features per step, not D={d}",
                f"Build it with in_features={2 * d} (2 * hidden_size).",
            )
        )
    if len(s) == 2 and s[-1] == out_shape[1] * out_shape[2] and m.in_features == out_shape[2]:
        raise Stop(
            at.finding(
                "the RNN's whole sequence, flattened",
                f"Take the last step: out[:, -1] gives (N, D) = ({out_shape[0]}, {out_shape[2]}); or use head='last'.",
            )
        )


# ----------------------------------------------------------------------------- traps seen over the whole run


def passes_lengths(ctx: Context, module: nn.Module, root: str, shape: tuple) -> bool:
    """Whether the dry run may pass ``lengths=`` to ``module``; warns when its forward takes none."""
    if takes_lengths(module):
        return True
    ctx.warn(
        Site("", root, shape),
        "its forward takes no lengths, so padded steps are treated as data",
        "Give it a lengths argument and pack the padded batch (or use cnnlstm.CNNLSTM).",
    )
    return False


def per_step_output(ctx: Context, output: Any) -> None:
    """Warn when a Linear on every RNN step gave the model's output: one output per step, maybe by mistake."""
    if ctx.per_step_linear is None or output != ctx.per_step_linear[1]:
        return
    path, s = ctx.per_step_linear
    ctx.warn(
        Site(path, "Linear", s),
        "it is applied to every step of the RNN's output, so the model returns one output per step",
        "For one label per sequence take the last step first: out[:, -1]; for frame labels this is right.",
    )


class StepReads(TorchFunctionMode):
    """Watches indexing of RNN outputs: ``out[:, -1]`` on a padded batch reads padding."""

    def __init__(self, ctx: Context):
        super().__init__()
        self.ctx = ctx

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.__getitem__ and self.ctx.lengths is not None and self.ctx.stack:
            self._check(args[0], args[1])
        return func(*args, **(kwargs or {}))

    def _check(self, t: torch.Tensor, idx: Any) -> None:
        ctx = self.ctx
        if not any(t is o for o in ctx.rnn_outputs) or not isinstance(idx, tuple) or len(idx) < 2:
            return
        steps, step = t.shape[1], idx[1]
        if isinstance(step, int) and step in (-1, steps - 1) and bool((ctx.lengths < steps).any()):
            path, m, _ = ctx.stack[-1]
            ctx.warn(
                Site(path, type(m).__name__, tuple(t.shape)),
                f"reads step {step} of every sequence, but the padded ones "
                f"(lengths {ctx.lengths.tolist()}) end earlier: that step is padding",
                "Gather each sequence's last valid step: out[torch.arange(N), lengths - 1], "
                "or use cnnlstm's head='last' with lengths=.",
            )
