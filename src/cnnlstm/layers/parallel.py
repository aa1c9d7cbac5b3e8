"""The parallel arrangement (LSTM-FCN, Karim et al. 2017): the RNN beside the CNN, not after it.

A series model is arranged one of two ways:

- ``"sequential"`` (the library's design): backbone → bridge → RNN → head; the RNN reads the CNN's steps.
- ``"parallel"``: the CNN arm (the backbone, its steps averaged over the valid ones) and the RNN arm (the raw
  series, its last valid state or its mean) side by side, concatenated, then one Linear. LSTM-FCN puts dropout 0.8
  on the RNN arm. With ``dimension_shuffle`` the RNN arm reads the series transposed, ``F`` steps of ``T``
  features (LSTM-FCN's own input: a univariate series is one step of ``T`` features).

``dimension_shuffle`` and variable lengths: the RNN's input size is then ``T``, so ``T`` is fixed when the model is
built (``input_shape=(T, F)``) and every batch has exactly ``T`` steps. A shorter series, padded to ``T`` and given
its ``lengths``, reads as itself followed by zeros: its padded steps become zero features, so what they hold never
matters, but how many there are does (the RNN arm has no steps to skip: each of its ``F`` steps holds every time
step). Without ``dimension_shuffle`` the RNN arm reads the padded batch packed, as a sequential model's RNN does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, ShapeError
from ..lengths import valid_mask
from .temporal import last_valid, mean_valid

__all__ = ["ARRANGEMENTS", "PARALLEL_POOLS", "ParallelHead", "arrangement_options"]

ARRANGEMENTS = ("sequential", "parallel")
PARALLEL_POOLS = ("last", "mean")  # head= of a parallel model: how its RNN arm's steps become one vector
_DEFAULTS = {"dimension_shuffle": False, "dropout": 0.8}


def arrangement_options(arrangement: str, options: dict[str, Any]) -> dict[str, Any]:
    """The arrangement's name checked, and its options with their defaults (``{}`` for ``"sequential"``).

    >>> arrangement_options("parallel", {"dropout": 0.5})
    {'dimension_shuffle': False, 'dropout': 0.5}
    """
    if arrangement not in ARRANGEMENTS:
        raise ConfigError(f"unknown arrangement {arrangement!r}: expected one of {', '.join(ARRANGEMENTS)}")
    if arrangement == "sequential":
        if options:
            raise ConfigError(
                f"arrangement_options {sorted(options)} are the parallel arrangement's (its RNN arm's "
                "dimension_shuffle and dropout): build the model with arrangement='parallel', or give none"
            )
        return {}
    unknown = sorted(set(options) - set(_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown arrangement_options {unknown}: the parallel arrangement takes {sorted(_DEFAULTS)}")
    out = {**_DEFAULTS, **options}
    if not isinstance(out["dimension_shuffle"], bool):
        raise ConfigError(f"dimension_shuffle must be True or False, got {out['dimension_shuffle']!r}")
    if not isinstance(out["dropout"], (int, float)) or not 0 <= out["dropout"] < 1:
        raise ConfigError(f"the RNN arm's dropout must be in [0, 1), got {out['dropout']!r}")
    return out


class ParallelHead(nn.Module):
    """LSTM-FCN's classifier: the CNN arm's mean over valid steps beside the RNN arm's summary, then Linear.

    Args:
        conv_features: ``C`` of the CNN arm's steps.
        rnn_features: ``D`` (``2*D`` bidirectional) of the RNN arm's steps.
        num_classes: outputs.
        pool: the RNN arm's summary: ``"last"`` (its last valid state; LSTM-FCN's) or ``"mean"``.
        bidirectional: the RNN arm is bidirectional (``"last"`` then joins both directions' final states).
        arm_dropout: dropout on the RNN arm's summary (LSTM-FCN: 0.8).
        dropout: dropout on the joined features, before the Linear.
        steps: with dimension shuffle, the ``T`` the RNN arm reads as its features; None without.

    Shapes: :meth:`arm_input` gives the RNN arm's input; ``forward(maps, lengths, states, arm_lengths)`` takes the
    CNN arm's ``(N, T', C)`` and the RNN arm's ``(N, S, D)`` with their lengths, and returns ``(N, classes)``.
    """

    per_step = False  # one output per series
    causal = False  # the CNN arm's mean changes with every later step: it cannot stream
    takes_lengths = True

    def __init__(
        self,
        conv_features: int,
        rnn_features: int,
        num_classes: int,
        *,
        pool: str = "last",
        bidirectional: bool = False,
        arm_dropout: float = 0.8,
        dropout: float = 0.0,
        steps: int | None = None,
    ):
        super().__init__()
        if pool not in PARALLEL_POOLS:
            raise ConfigError(
                f"head={pool!r} cannot summarise the parallel arrangement's RNN arm: expected one of "
                f"{', '.join(PARALLEL_POOLS)} (the classifier after the joined arms is one Linear)"
            )
        if num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
        self.rnn_pool = pool
        self.bidirectional = bidirectional
        self.steps = steps
        self.conv_features, self.rnn_features = conv_features, rnn_features
        self.in_features = conv_features + rnn_features
        self.arm_dropout = nn.Dropout(arm_dropout)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.in_features, num_classes)

    def extra_repr(self) -> str:
        return f"pool={self.rnn_pool!r}, dimension_shuffle={self.steps is not None}"

    def arm_input(self, x: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The RNN arm's input and lengths: the series ``(N, T, F)`` itself, or shuffled, ``(N, F, T)``.

        Shuffled, padded steps become zero features and all ``F`` steps are valid (lengths ``F`` each).
        """
        if self.steps is None:
            return x, lengths
        n, t, f = x.shape
        if t != self.steps:
            raise ShapeError(
                f"the parallel arrangement's dimension_shuffle reads each series as F={f} steps of T={self.steps} "
                f"features, so every batch has T={self.steps} steps, got {tuple(x.shape)} with T={t}: pad (with "
                f"lengths) or crop the series to {self.steps} steps, or build the model with "
                "arrangement_options={'dimension_shuffle': False}"
            )
        if lengths is not None:
            x = x.masked_fill(~valid_mask(lengths.to(x.device), t).unsqueeze(-1), 0.0)  # padded steps: zeros
            lengths = torch.full((n,), f, dtype=lengths.dtype, device=lengths.device)  # all F steps are valid
        return x.transpose(1, 2), lengths  # (N, F, T): F steps of T features (LSTM-FCN's dimension shuffle)

    def forward(
        self,
        maps: torch.Tensor,
        lengths: torch.Tensor | None,
        states: torch.Tensor,
        arm_lengths: torch.Tensor | None,
    ) -> torch.Tensor:
        """Args: maps ``(N, T', C)`` (the CNN arm), lengths ``(N,)`` its valid steps; states ``(N, S, D)`` (the RNN
        arm), arm_lengths ``(N,)``. Returns ``(N, classes)``."""
        for what, t, want in (("CNN", maps, self.conv_features), ("RNN", states, self.rnn_features)):
            if t.dim() != 3 or t.shape[-1] != want:
                raise ShapeError(f"ParallelHead wants the {what} arm's steps (N, T, {want}), got {tuple(t.shape)}")
        conv = mean_valid(maps, lengths)  # (N, C): global average pooling over the valid steps
        if self.rnn_pool == "last":
            arm = last_valid(states, arm_lengths, self.bidirectional)  # (N, D)
        else:
            arm = mean_valid(states, arm_lengths)  # (N, D)
        joined = torch.cat([conv.to(arm.dtype), self.arm_dropout(arm)], dim=-1)  # (N, C + D)
        return self.fc(self.dropout(joined))
