"""Anomaly detection: learn what normal looks like by predicting ahead, score what is not.

A CNN-LSTM with a per-step head reads a normal sequence and predicts, at every step ``t``, the target
of step ``t + horizon``: for video the frame pooled to a ``grid x grid`` map of its pixels (raw pixels
cannot collapse the way learnt features can), for series the step's values. With ``residual`` the model
predicts the *change* from step ``t`` to ``t + horizon`` instead. Video uses ``horizon=6, residual=True``:
one frame ahead, motion is a sub-pixel jitter that no model predicts, so a frozen object scores *lower*
than a moving one; six frames ahead the path of a smooth motion is predictable, and a freeze, a
reversal or a jump leaves it. A step's error is the mean squared difference, for video taken relative
to the sizes of the predicted and the actual change (``relative``: a frozen small, slow digit then
counts as much as a big, fast one; ``eps``, a tenth of the mean change seen on held-out normal video,
keeps still scenes from dividing by nothing). Errors are standardised
with the mean and spread seen on held-out *normal* data only, and a clip's score is the **maximum** of
its standardised step errors after the first ``warmup`` steps, whose predictions have seen too little
(one bad moment makes an anomalous clip). The threshold is the ``1 - false_alarm_rate`` quantile of
held-out normal clip scores: nothing about the anomalies is used to set it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import require
from .lengths import valid_mask
from .model import CNNLSTM

__all__ = ["AnomalyStats", "auroc", "calibrate", "mean_change", "next_step_errors", "targets"]


def targets(x: torch.Tensor, kind: str, grid: int = 8) -> torch.Tensor:
    """What the model learns to predict one step ahead.

    Args:
        x: a normalised clip ``(N, T, C, H, W)`` (video) or series ``(N, T, F)``.
        kind: ``"video"`` or ``"series"``.
        grid: video frames are pooled to ``grid x grid`` cells.

    Returns:
        ``(N, T, D)``: ``D = C * grid * grid`` for video, ``F`` for series.
    """
    if kind == "series":
        return x
    n, t = x.shape[:2]
    pooled = F.adaptive_avg_pool2d(x.flatten(0, 1), grid)  # (N*T, C, g, g)
    return pooled.flatten(1).unflatten(0, (n, t))  # (N, T, C*g*g)


def next_step_errors(
    model: CNNLSTM,
    x: torch.Tensor,
    kind: str,
    grid: int = 8,
    lengths: torch.Tensor | None = None,
    horizon: int = 1,
    residual: bool = False,
    relative: float | None = None,
) -> torch.Tensor:
    """Per-step squared error of the model's prediction ``horizon`` steps ahead.

    Args:
        model: a CNNLSTM with a per-step head of ``D`` outputs (``D`` as :func:`targets` gives).
        x: ``(N, T, ...)`` normalised clips or series.
        kind, grid: as for :func:`targets`.
        lengths: optional ``(N,)`` valid steps.
        horizon: the output at step ``t`` predicts step ``t + horizon``.
        residual: predict the change ``target[t + horizon] - target[t]`` instead of the target.
        relative: ``eps`` to score the error relative to the sizes of what was predicted and what came,
            ``|p - a|^2 / (|p|^2 + |a|^2 + eps)`` (0 when right, 1 for a change that did not come or came
            unforeseen, 2 for the opposite change), so a small object's freeze counts as much as a big one's;
            None for the plain squared error (training).

    Returns:
        ``(N, T)``: the error of step ``t`` as predicted at ``t - horizon``; the first ``horizon`` steps
        have no prediction and are 0, as are padded steps.
    """
    h = horizon
    if x.shape[1] <= h:  # too short for a single guess
        return x.new_zeros(x.shape[:2])
    pred = model(x, lengths)  # (N, T, D): the output at step t is for step t + h
    tgt = targets(x, kind, grid)
    want = tgt[:, h:] - tgt[:, :-h] if residual else tgt[:, h:]
    p = pred[:, :-h]
    err = (p - want).pow(2).mean(-1)  # (N, T-h)
    if relative is not None:
        err = err / (p.pow(2).mean(-1) + want.pow(2).mean(-1) + relative)
    err = F.pad(err, (h, 0))  # (N, T)
    if lengths is not None:
        err = err * valid_mask(lengths.to(err.device), err.shape[1])  # padded steps: 0
    return err


@dataclass
class AnomalyStats:
    """Held-out normal statistics: step errors' mean and std, and the clip-score threshold."""

    mean: float
    std: float
    threshold: float
    false_alarm_rate: float
    pooling: str = "max"
    warmup: int = 3  # the first steps' predictions have seen too little to judge (the direction of motion)
    horizon: int = 1
    residual: bool = False
    grid: int = 8
    relative: float | None = None

    @property
    def target(self) -> dict[str, Any]:
        """The prediction target's options, as :func:`next_step_errors` takes them."""
        return {"grid": self.grid, "horizon": self.horizon, "residual": self.residual, "relative": self.relative}

    def standardise(self, err: np.ndarray) -> np.ndarray:
        return (np.asarray(err) - self.mean) / self.std

    def clip_score(self, err: np.ndarray) -> float:
        """A sequence's score: the max of its standardised step errors after the first ``warmup`` steps."""
        err = np.asarray(err)
        z = self.standardise(err[min(self.warmup, len(err) - 1) :])
        return float(z.max()) if len(z) else float("-inf")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate(
    normal_errors: list[np.ndarray], false_alarm_rate: float = 0.05, warmup: int = 3, **target: Any
) -> AnomalyStats:
    """Standardisation and threshold from step errors of held-out normal sequences only.

    Args:
        normal_errors: one ``(T_i,)`` error array per held-out normal sequence (step 0 first).
        false_alarm_rate: the share of normal sequences allowed above the threshold.
        warmup: steps left out at the start of each sequence.
        target: the ``grid``/``horizon``/``residual``/``relative`` the errors were measured with (kept).
    """
    steps = np.concatenate([np.asarray(e)[min(warmup, len(e) - 1) :] for e in normal_errors])
    stats = AnomalyStats(float(steps.mean()), float(steps.std() or 1.0), 0.0, false_alarm_rate, warmup=warmup, **target)
    scores = [stats.clip_score(e) for e in normal_errors]
    stats.threshold = float(np.quantile(scores, 1.0 - false_alarm_rate))
    return stats


def mean_change(seqs: list[torch.Tensor], horizon: int, grid: int) -> float:
    """Mean squared change of the pooled frames over ``horizon`` steps, over videos ``(T, C, H, W)`` (0 if none
    is longer than ``horizon``)."""
    pooled = [targets(s[None], "video", grid)[0] for s in seqs if len(s) > horizon]  # (T, D) each
    sizes = [(p[horizon:] - p[:-horizon]).pow(2).mean(-1) for p in pooled]
    return float(torch.cat(sizes).mean()) if sizes else 0.0


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (scikit-learn's), NaN when only one kind is present."""
    metrics = require("sklearn.metrics", "train", "AUROC")
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(metrics.roc_auc_score(labels, np.asarray(scores, dtype=float)))
