"""Anomaly detection: learn what normal looks like by predicting the next step, score what is not.

A CNN-LSTM with a per-step head reads a normal sequence and predicts, at every step, the next step's
target: for video the next frame pooled to a ``grid x grid`` map of its pixels (raw pixels cannot
collapse the way learnt features can), for series the next step's values. A step's error is the mean
squared difference; errors are standardised with the mean and spread seen on held-out *normal* data
only, and a clip's score is the **maximum** of its standardised step errors after the first
``warmup`` steps, whose predictions have seen too little (one bad moment makes an anomalous clip).
The threshold is the ``1 - false_alarm_rate`` quantile of held-out normal clip scores: nothing about
the anomalies is used to set it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import require
from .model import CNNLSTM

__all__ = ["AnomalyStats", "auroc", "calibrate", "next_step_errors", "targets"]


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
    model: CNNLSTM, x: torch.Tensor, kind: str, grid: int = 8, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-step squared error of the model's one-step-ahead prediction.

    Returns:
        ``(N, T)``: step 0 has no prediction and is 0; padded steps are 0.
    """
    pred = model(x, lengths)  # (N, T, D): the prediction made at step t is for step t+1
    tgt = targets(x, kind, grid)
    err = (pred[:, :-1] - tgt[:, 1:]).pow(2).mean(-1)  # (N, T-1)
    err = F.pad(err, (1, 0))  # (N, T)
    if lengths is not None:
        err = err * (torch.arange(err.shape[1]) < lengths.unsqueeze(1))
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

    def standardise(self, err: np.ndarray) -> np.ndarray:
        return (np.asarray(err) - self.mean) / self.std

    def clip_score(self, err: np.ndarray) -> float:
        """A sequence's score: the max of its standardised step errors after the first ``warmup`` steps."""
        err = np.asarray(err)
        z = self.standardise(err[min(self.warmup, len(err) - 1) :])
        return float(z.max()) if len(z) else float("-inf")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate(normal_errors: list[np.ndarray], false_alarm_rate: float = 0.05, warmup: int = 3) -> AnomalyStats:
    """Standardisation and threshold from step errors of held-out normal sequences only.

    Args:
        normal_errors: one ``(T_i,)`` error array per held-out normal sequence (step 0 first).
        false_alarm_rate: the share of normal sequences allowed above the threshold.
    """
    steps = np.concatenate([np.asarray(e)[min(warmup, len(e) - 1) :] for e in normal_errors])
    stats = AnomalyStats(float(steps.mean()), float(steps.std() or 1.0), 0.0, false_alarm_rate, warmup=warmup)
    scores = [stats.clip_score(e) for e in normal_errors]
    stats.threshold = float(np.quantile(scores, 1.0 - false_alarm_rate))
    return stats


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (scikit-learn's), NaN when only one kind is present."""
    metrics = require("sklearn.metrics", "train", "AUROC")
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(metrics.roc_auc_score(labels, np.asarray(scores, dtype=float)))
