"""PNG plots a person would rather look at than read: training curves, confusion matrix."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import require


def _plt():
    mpl = require("matplotlib", "train", "plotting")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_epoch_metrics(metrics_csv: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch values from Lightning's ``metrics.csv``: ``{name: [(epoch, value), ...]}``."""
    out: dict[str, list[tuple[int, float]]] = {}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue
            for k, v in row.items():
                if k in ("epoch", "step") or not v or k.endswith("_step"):
                    continue
                out.setdefault(k.removesuffix("_epoch"), []).append((int(row["epoch"]), float(v)))
    return out


def plot_curves(metrics_csv: str | Path, path: str | Path) -> Path:
    """Loss and accuracy per epoch, train and val, side by side. Returns the PNG's path."""
    plt = _plt()
    m = read_epoch_metrics(metrics_csv)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, what in zip(axes, ("loss", "acc")):
        for stage in ("train", "val"):
            pts = m.get(f"{stage}_{what}", [])
            if pts:
                ax.plot([e + 1 for e, _ in pts], [v for _, v in pts], marker="o", label=stage)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if what == "acc" else "cross-entropy")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        else:  # a loss-only task (forecast, anomaly)
            ax.text(0.5, 0.5, f"no {what} logged for this task", ha="center", va="center", transform=ax.transAxes)
    axes[0].set_title("loss")
    axes[1].set_title("accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """A confusion matrix (rows: true class, columns: predicted) with counts. Returns the PNG's path."""
    plt = _plt()
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * k, 0.8 + 0.55 * k))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(int(matrix[i, j])),
                ha="center",
                va="center",
                color="white" if matrix[i, j] > top / 2 else "black",
                fontsize=8,
            )
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_timeline(
    frames: Sequence[int],
    probs: np.ndarray,
    classes: Sequence[str],
    path: str | Path,
    title: str = "",
    fps: float | None = None,
) -> Path:
    """Class probabilities over a streamed video, one line per class. Returns the PNG's path."""
    plt = _plt()
    x = np.asarray(frames, dtype=float)
    xlabel = "frame"
    if fps:
        x, xlabel = x / fps, "seconds"
    fig, ax = plt.subplots(figsize=(10, 3.8))
    top = np.argsort(probs.max(axis=0))[::-1][:10]  # at most 10 lines: the classes that ever score highest
    for k in top:
        ax.plot(x, probs[:, k], label=classes[k], linewidth=1.2)
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("probability")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_forecast(
    history: np.ndarray,
    forecast: np.ndarray,
    truth: np.ndarray | None,
    names: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """History, forecast and (when known) truth, one panel per target channel. Returns the PNG's path."""
    plt = _plt()
    k = forecast.shape[1]
    fig, axes = plt.subplots(k, 1, figsize=(10, 3.2 * k), squeeze=False)
    t0 = len(history)
    steps = np.arange(t0, t0 + len(forecast))
    for j, ax in enumerate(axes[:, 0]):
        ax.plot(np.arange(t0), history[:, j], color="black", linewidth=1, label="history")
        if truth is not None:
            ax.plot(steps[: len(truth)], truth[:, j], color="tab:green", label="truth")
        ax.plot(steps, forecast[:, j], color="tab:red", linestyle="--", marker=".", label="forecast")
        ax.set_ylabel(names[j])
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    axes[0, 0].set_title(title, fontsize=9)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_scores(
    scores: Sequence[Sequence[float]],
    names: Sequence[str],
    threshold: float,
    path: str | Path,
    labels: Sequence[int | None] | None = None,
    series: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    start: int = 1,
) -> Path:
    """Standardised anomaly score per step, one line per clip (anomalies red), threshold dashed.

    ``scores[i][0]`` is step ``start`` of clip ``i`` (the first step with a prediction).

    For one series, the series itself is drawn above its scores, with the true anomaly shaded.
    """
    plt = _plt()
    rows = 2 if series is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(10, 3.2 * rows), squeeze=False, sharex=series is not None)
    ax = axes[-1, 0]
    for i, z in enumerate(scores):
        lab = labels[i] if labels is not None else None
        color = "tab:red" if lab == 1 else ("tab:blue" if lab == 0 else None)
        ax.plot(
            range(start, start + len(z)) if series is None else range(len(z)), z, linewidth=0.8, alpha=0.7, color=color
        )
    ax.axhline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.2f}")
    ax.set_xlabel("step")
    ax.set_ylabel("standardised error")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    if series is not None:
        top = axes[0, 0]
        top.plot(series, color="black", linewidth=0.6)
        if truth is not None and truth.any():
            idx = np.flatnonzero(truth)
            for a in (top, ax):
                a.axvspan(idx[0], idx[-1], color="tab:red", alpha=0.2)
        top.set_title(names[0], fontsize=9)
    else:
        ax.set_title(
            f"{len(scores)} clips" + (" (red: anomalies, blue: normal)" if labels is not None else ""), fontsize=9
        )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
