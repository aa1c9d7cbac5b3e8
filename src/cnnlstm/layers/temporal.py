"""The recurrent part (LSTM or GRU over ``(N, T, F)``, padded clips packed) and the heads."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .._messages import clip_maps_fix, image_maps_fix
from .._registry import Registry
from ..errors import ConfigError, ShapeError
from ..lengths import check_lengths, valid_mask

__all__ = ["HEADS", "RNNS", "Head", "Temporal", "head", "last_valid", "mean_valid", "register_head"]

RNNS = {"lstm": nn.LSTM, "gru": nn.GRU}


class Temporal(nn.Module):
    """LSTM or GRU over ``(N, T, F)``, batch first, with optional lengths for padded clips.

    Args:
        input_size: ``F``; :class:`cnnlstm.CNNLSTM` infers it, nobody types it.
        hidden_size: ``D``.
        rnn: ``"lstm"`` or ``"gru"``.
        num_layers, bidirectional, dropout: as in :class:`torch.nn.LSTM`.

    Shapes:
        x: ``(N, T, F)``; lengths: optional ``(N,)``; state: optional initial state.

        returns: ``(states (N, T, D*dirs), final state)``. With lengths the padded steps
        are skipped (packed sequences), come out as zeros, and the final state is each
        sequence's last valid one.
    """

    takes_lengths = True  # packs padded steps: the shape doctor does not warn that its RNN runs over them

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 256,
        rnn: str = "lstm",
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        if rnn not in RNNS:
            raise ConfigError(f"unknown rnn {rnn!r}: expected one of {', '.join(RNNS)}")
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ConfigError(
                f"rnn sizes must be positive, got input_size={input_size}, hidden_size={hidden_size}, "
                f"num_layers={num_layers}"
            )
        self.kind = rnn
        self.rnn = RNNS[rnn](
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )

    @property
    def input_size(self) -> int:
        return self.rnn.input_size

    @property
    def bidirectional(self) -> bool:
        return self.rnn.bidirectional

    @property
    def out_features(self) -> int:
        """``D * dirs``, the size of each output step."""
        return self.rnn.hidden_size * (2 if self.rnn.bidirectional else 1)

    def _meta(self, x: torch.Tensor):
        r = self.rnn
        n, t = x.shape[:2]
        dirs = 2 if r.bidirectional else 1
        h = x.new_empty((r.num_layers * dirs, n, r.hidden_size))
        return x.new_empty((n, t, r.hidden_size * dirs)), ((h, h.clone()) if isinstance(r, nn.LSTM) else h)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state=None):
        """Args: x ``(N, T, F)``, lengths ``(N,)``. Returns ``((N, T, D*dirs), state)``."""
        name = self.kind.upper()
        if x.dim() != 3:
            msg = f"{name} wants (N, T, F={self.input_size}) with batch_first=True, got {x.dim()}-D {tuple(x.shape)}"
            if x.dim() == 5:
                msg += f": a clip of feature maps. {clip_maps_fix(tuple(x.shape), self.input_size)}"
            elif x.dim() == 4:
                msg += f": an image's feature maps. {image_maps_fix(tuple(x.shape))}"
            elif x.dim() == 2:
                msg += ": add the time axis with x.unsqueeze(1) for one step, or the batch axis with x.unsqueeze(0)."
            raise ShapeError(msg)
        if x.shape[-1] != self.input_size:
            raise ShapeError(
                f"{name} wants (N, T, F={self.input_size}), got {tuple(x.shape)} with F={x.shape[-1]}: "
                f"build it with input_size={x.shape[-1]}"
            )
        n, t = x.shape[:2]
        lengths = check_lengths(lengths, n, t, name)
        if x.device.type == "meta":  # a dry run: the shapes alone, not PyTorch's step-by-step meta decomposition
            return self._meta(x)
        if lengths is None or not bool((lengths < t).any()):
            return self.rnn(x, state)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, state = self.rnn(packed, state)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=t)  # (N, T, D*dirs)
        return out, state


def last_valid(states: torch.Tensor, lengths: torch.Tensor | None, bidirectional: bool = False) -> torch.Tensor:
    """Each sequence's last valid step ``(N, T, D) → (N, D)``; for a bidirectional RNN, the forward direction's last
    valid step joined with the backward direction's first step (its final state)."""
    n, _t, d = states.shape
    if lengths is None:
        last = states[:, -1]  # (N, D)
    else:
        idx = (lengths.to(states.device) - 1).view(n, 1, 1).expand(n, 1, d)
        last = states.gather(1, idx).squeeze(1)  # (N, D): step lengths-1 of each
    if not bidirectional:
        return last
    half = d // 2
    return torch.cat([last[:, :half], states[:, 0, half:]], dim=-1)  # (N, 2*Dh)


def mean_valid(states: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """The mean over each sequence's valid steps, ``(N, T, D) → (N, D)``; float32 under bf16 with lengths."""
    if lengths is None:
        return states.mean(dim=1)  # (N, D)
    mask = valid_mask(lengths.to(states.device), states.shape[1]).unsqueeze(-1)  # (N, T, 1)
    total = (states * mask).sum(dim=1)
    return total / lengths.to(states.device, torch.float32).unsqueeze(-1)  # (N, D)


HEADS: Registry[type[Head]] = Registry("head")
register_head = HEADS.register


class Head(nn.Module):
    """From RNN states ``(N, T, D)`` to logits. ``per_step`` heads keep the time axis.

    Args:
        in_features: ``D`` (``2*D`` for a bidirectional RNN); inferred by the builder.
        num_classes: outputs.
        dropout: dropout before the final Linear.

    A head that needs to know more of the RNN than ``D`` takes it in ``__init__`` and overrides
    :meth:`for_rnn`, which the builder calls (``last`` learns whether the RNN is bidirectional).
    """

    per_step = False  # True: one output per step on purpose (the shape doctor does not warn about it)
    causal = True  # can be computed step by step while streaming
    takes_lengths = True  # forward(states, lengths=): padded steps are kept out

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
        self.in_features = in_features
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    @classmethod
    def for_rnn(cls, rnn: Temporal, num_classes: int, **options) -> Head:
        """This head over the states of ``rnn``: ``cls(rnn.out_features, num_classes, **options)``."""
        return cls(rnn.out_features, num_classes, **options)

    def _check(self, states: torch.Tensor) -> None:
        if states.dim() != 3 or states.shape[-1] != self.in_features:
            raise ShapeError(
                f"head {type(self).__name__} wants RNN states (N, T, D={self.in_features}), got {tuple(states.shape)}"
            )

    def pool(self, states: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """``(N, T, D) → (N, D)`` (or ``(N, T, D)`` for per-step heads)."""
        raise NotImplementedError

    def forward(self, states: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Args: states ``(N, T, D)``, lengths ``(N,)``. Returns ``(N, classes)`` or ``(N, T, classes)``."""
        self._check(states)
        lengths = check_lengths(lengths, states.shape[0], states.shape[1], f"head {type(self).__name__}")
        return self.fc(self.dropout(self.pool(states, lengths)))


@register_head("last")
class LastStep(Head):
    """The last *valid* step of each sequence; for a bidirectional RNN, the forward direction's
    last valid step joined with the backward direction's first step (its final state).

    Args:
        bidirectional: whether the RNN is bidirectional (:meth:`for_rnn` reads it off the RNN).
    """

    def __init__(self, in_features: int, num_classes: int, bidirectional: bool = False, dropout: float = 0.0):
        super().__init__(in_features, num_classes, dropout)
        self.bidirectional = bidirectional

    @classmethod
    def for_rnn(cls, rnn: Temporal, num_classes: int, **options) -> LastStep:
        return cls(rnn.out_features, num_classes, bidirectional=rnn.bidirectional, **options)

    def pool(self, states: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        return last_valid(states, lengths, self.bidirectional)


@register_head("mean")
class MeanPool(Head):
    """The mean over each sequence's valid steps."""

    causal = False

    def pool(self, states: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        return mean_valid(states, lengths)


@register_head("attention")
class AttentionPool(Head):
    """Attention pooling over steps: a learned score per step, softmax over valid steps, weighted sum."""

    causal = False

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0):
        super().__init__(in_features, num_classes, dropout)
        self.score = nn.Linear(in_features, 1)

    def weights(self, states: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """``(N, T)`` attention weights over steps, zero on padded steps."""
        scores = self.score(states).squeeze(-1)  # (N, T)
        if lengths is not None:
            mask = valid_mask(lengths.to(states.device), states.shape[1])
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(dim=1)

    def pool(self, states: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        w = self.weights(states, lengths)  # (N, T)
        return torch.bmm(w.unsqueeze(1), states).squeeze(1)  # (N, D)


@register_head("frames")
class PerStep(Head):
    """One output per step: ``(N, T, D) → (N, T, classes)``; padded steps give zeros."""

    per_step = True

    def pool(self, states: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        return states

    def forward(self, states: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        out = super().forward(states, lengths)  # (N, T, classes)
        if lengths is None:
            return out
        mask = valid_mask(lengths.to(states.device), states.shape[1]).unsqueeze(-1)
        return out * mask


@register_head("forecast")
class Forecast(LastStep):
    """The next ``horizon`` steps of ``num_classes`` target channels from the last valid state:
    ``(N, T, D) → (N, horizon, targets)``. Causal, so it streams.

    Args:
        horizon: steps ahead.
    """

    def __init__(
        self, in_features: int, num_classes: int, bidirectional: bool = False, dropout: float = 0.0, horizon: int = 1
    ):
        if horizon < 1:
            raise ConfigError(f"forecast head needs horizon >= 1 steps, got {horizon}")
        super().__init__(in_features, num_classes * horizon, bidirectional, dropout)
        self.horizon = horizon
        self.targets = num_classes

    def forward(self, states: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Args: states ``(N, T, D)``. Returns ``(N, horizon, targets)``."""
        return super().forward(states, lengths).unflatten(-1, (self.horizon, self.targets))


def head(name: str, in_features: int | Temporal, num_classes: int, **options) -> Head:
    """Build a head by name: ``last``, ``mean``, ``attention``, ``frames`` or ``forecast`` (``horizon=``).

    Args:
        name: the head's name.
        in_features: ``D`` of the states, or the :class:`Temporal` whose states the head reads: then the
            head learns from it what it needs (:meth:`Head.for_rnn`), as :class:`~cnnlstm.CNNLSTM`'s builder does.
        num_classes: outputs.
        options: the head's own options.

    >>> head("mean", 64, 10)(torch.zeros(2, 5, 64)).shape
    torch.Size([2, 10])
    """
    cls = HEADS.get(name)
    try:
        if isinstance(in_features, Temporal):
            return cls.for_rnn(in_features, num_classes, **options)
        return cls(in_features, num_classes, **options)
    except TypeError as e:
        raise ConfigError(f"head {name!r} does not take these options {sorted(options)}: {e}") from None
