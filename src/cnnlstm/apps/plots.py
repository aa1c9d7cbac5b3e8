"""PNG plots a person would rather look at than read: training curves, confusion matrix, stream timelines,
forecasts and anomaly scores.

Each ``plot_*`` function saves the figure its ``*_figure`` twin builds (a matplotlib ``Figure``, outside pyplot,
that tests and notebooks can inspect). Figures are sized by what they hold, titles wrap to fit, and a class keeps
one colour (:func:`class_colors`, by class index) in every plot of a run.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ._figure import class_colors, fit_title, new_figure, save, true_runs

__all__ = [
    "LOSS_NAMES",
    "class_colors",
    "confusion_figure",
    "curves_figure",
    "forecast_figure",
    "plot_confusion",
    "plot_curves",
    "plot_forecast",
    "plot_scores",
    "plot_timeline",
    "read_epoch_metrics",
    "scores_figure",
    "timeline_figure",
]

# what each task's training minimises, as the loss axis names it
LOSS_NAMES = {
    "classify": "cross-entropy",
    "forecast": "mean squared error",
    "anomaly": "mean squared error of the next-step prediction",
}
TIMELINE_LINES = 10  # a stream timeline draws at most this many classes: the ones that ever score highest
ANOMALY, NORMAL = "tab:red", "tab:blue"


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


# ---------------------------------------------------------------------------------------------- training curves


def curves_figure(metrics_csv: str | Path, task: str) -> Any:
    """Loss per epoch, train and val, named for ``task`` (a key of :data:`LOSS_NAMES`), and beside it accuracy
    where the run logged any."""
    if task not in LOSS_NAMES:
        raise ConfigError(f"unknown task {task!r}: expected one of {', '.join(LOSS_NAMES)}")
    m = read_epoch_metrics(metrics_csv)
    panels = [("loss", LOSS_NAMES[task])] + ([("acc", "accuracy")] if any(k.endswith("_acc") for k in m) else [])
    fig = new_figure(5.0 * len(panels), 4.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (what, name) in zip(axes, panels):
        for stage, color in (("train", "tab:blue"), ("val", "tab:orange")):
            pts = m.get(f"{stage}_{what}", [])
            if pts:
                ax.plot([e + 1 for e, _ in pts], [v for _, v in pts], marker="o", color=color, label=stage)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title("loss" if what == "loss" else "accuracy")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "nothing logged yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def plot_curves(metrics_csv: str | Path, path: str | Path, task: str) -> Path:
    """Save :func:`curves_figure` as ``path``; returns it."""
    return save(curves_figure(metrics_csv, task), path)


# ---------------------------------------------------------------------------------------------- confusion matrix


def confusion_figure(matrix: np.ndarray, classes: Sequence[str], title: str = "") -> Any:
    """A confusion matrix: rows the true class, columns the predicted one, coloured by the share of the true
    class (so rare classes read as well as common ones), with the counts written where they fit.

    Args:
        matrix: ``(K, K)`` counts.
        classes: the ``K`` class names.
        title: wrapped to the figure's width.

    The figure grows with ``K`` and the longest class name: cells of 0.9 inch at 2 classes, 0.25 at 32 and over.
    """
    k = len(classes)
    matrix = np.asarray(matrix)
    cell = float(np.clip(8.0 / max(k, 1), 0.25, 0.9))  # inches per cell
    tick_pt = float(np.clip(cell * 72 * 0.5, 6.5, 10))
    longest = max((len(c) for c in classes), default=1)
    name_in = longest * 0.62 * tick_pt / 72  # how far the longest class name reaches, in inches
    rotation = 0 if longest <= 3 else (90 if k > 20 else 45)
    side = k * cell
    left = name_in + 0.55  # names and the "true" label
    bottom = (name_in * (1.0 if rotation == 90 else 0.75) if rotation else tick_pt / 72) + 0.55
    right, top = 1.1, 0.7  # colour bar; title
    width, height = max(left + side + right, 3.6), bottom + side + top
    fig = new_figure(width, height)
    ax = fig.add_axes((left / width, bottom / height, side / width, side / height))
    cax = fig.add_axes(((left + side + 0.15) / width, bottom / height, 0.15 / width, side / height))

    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)  # (K, K)
    img = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(img, cax=cax).set_label("share of the true class")
    ha, va = ("center", "top") if rotation == 0 else ("right", "top" if rotation == 45 else "center")
    ax.set_xticks(range(k), classes, rotation=rotation, rotation_mode="anchor", ha=ha, va=va, fontsize=tick_pt)
    ax.set_yticks(range(k), classes, fontsize=tick_pt)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    count_pt = _count_size(cell, len(str(int(matrix.max()))) if matrix.size else 1)
    if count_pt:
        for i in range(k):
            for j in range(k):
                n = int(matrix[i, j])
                color = "#b0b0b0" if n == 0 else ("white" if share[i, j] > 0.55 else "black")
                ax.text(j, i, str(n), ha="center", va="center", color=color, fontsize=count_pt)
    fit_title(fig, ax, title, fontsize=10)
    return fig


def _count_size(cell: float, digits: int) -> float | None:
    """The font size (points) at which ``digits`` digits fit a cell ``cell`` inches wide; None below 5 points."""
    room = cell * 72 * 0.85  # points
    size = min(9.0, cell * 72 * 0.42, room / (0.62 * digits))
    return size if size >= 5 else None


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Save :func:`confusion_figure` as ``path``; returns it."""
    return save(confusion_figure(matrix, classes, title), path)


# ---------------------------------------------------------------------------------------------- stream timeline


def timeline_figure(
    frames: Sequence[int], probs: np.ndarray, classes: Sequence[str], title: str = "", fps: float | None = None
) -> Any:
    """Class probabilities over a streamed video, one line per class, each in its class colour.

    Args:
        frames: the frame index of each of the ``S`` steps.
        probs: ``(S, K)`` probabilities.
        classes: the ``K`` class names.
        fps: the video's frame rate: the x axis in seconds (else in frames).
    """
    x = np.asarray(frames, dtype=float)
    xlabel = "frame"
    if fps:
        x, xlabel = x / fps, "seconds"
    colors = class_colors(len(classes))
    fig = new_figure(10, 3.8)
    ax = fig.add_subplot()
    top = np.argsort(probs.max(axis=0), kind="stable")[::-1][:TIMELINE_LINES]  # highest peak first
    for k in top:
        ax.plot(x, probs[:, k], label=classes[k], color=colors[k], linewidth=1.2)
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("probability")
    ax.grid(alpha=0.3)
    more = len(classes) - len(top)
    ax.legend(
        loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
        title=f"top {len(top)} of {len(classes)}" if more else None, title_fontsize=8,
    )  # fmt: skip
    fig.tight_layout()
    fit_title(fig, ax, title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_timeline(
    frames: Sequence[int],
    probs: np.ndarray,
    classes: Sequence[str],
    path: str | Path,
    title: str = "",
    fps: float | None = None,
) -> Path:
    """Save :func:`timeline_figure` as ``path``; returns it."""
    return save(timeline_figure(frames, probs, classes, title, fps), path)


# ---------------------------------------------------------------------------------------------- forecast


def forecast_figure(
    history: np.ndarray, forecast: np.ndarray, truth: np.ndarray | None, names: Sequence[str], title: str = ""
) -> Any:
    """History, forecast and (when known) truth, one panel per target channel.

    Args:
        history: ``(T, K)`` the steps before the forecast.
        forecast: ``(H, K)`` the forecast steps.
        truth: ``(H', K)`` what came (``H' <= H``), or None.
        names: the ``K`` channel names.
    """
    k = forecast.shape[1]
    fig = new_figure(10, 3.2 * k)
    axes = fig.subplots(k, 1, squeeze=False, sharex=True)[:, 0]
    t0 = len(history)
    steps = np.arange(t0, t0 + len(forecast))
    for j, ax in enumerate(axes):
        ax.plot(np.arange(t0), history[:, j], color="black", linewidth=1, label="history")
        if truth is not None:
            ax.plot(steps[: len(truth)], truth[:, j], color="tab:green", label="truth")
        ax.plot(steps, forecast[:, j], color="tab:red", linestyle="--", marker=".", label="forecast")
        ax.set_ylabel(names[j])
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    fit_title(fig, axes[0], title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_forecast(
    history: np.ndarray,
    forecast: np.ndarray,
    truth: np.ndarray | None,
    names: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """Save :func:`forecast_figure` as ``path``; returns it."""
    return save(forecast_figure(history, forecast, truth, names, title), path)


# ---------------------------------------------------------------------------------------------- anomaly scores


def scores_figure(
    scores: Sequence[Sequence[float]],
    names: Sequence[str],
    threshold: float,
    labels: Sequence[int | None] | None = None,
    series: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    start: int = 1,
) -> Any:
    """Standardised anomaly score per step, the threshold dashed; every entry named in a legend.

    Clips (no ``series``): one line per clip, red for a clip labelled anomalous, blue for a normal one;
    ``scores[i][0]`` is step ``start`` of clip ``i`` (the first step with a prediction).

    One series: the ``(T,)`` ``series`` is drawn above its ``(T,)`` scores, the ``(T,)`` ``truth`` mask's
    anomalous steps shaded on both.
    """
    from matplotlib.lines import Line2D

    one = series is not None
    fig = new_figure(10, 3.2 * (2 if one else 1))
    axes = fig.subplots(2 if one else 1, 1, squeeze=False, sharex=one)[:, 0]
    ax = axes[-1]
    legend = {"bbox_to_anchor": (1.01, 1.0), "loc": "upper left", "fontsize": 8, "frameon": False}
    if one:
        ax.plot(np.arange(len(scores[0])), scores[0], linewidth=0.8, color=NORMAL, label="score")
    else:
        for i, z in enumerate(scores):
            lab = labels[i] if labels is not None else None
            color = ANOMALY if lab == 1 else (NORMAL if lab == 0 else "tab:gray")
            ax.plot(range(start, start + len(z)), z, linewidth=0.8, alpha=0.7, color=color)
    ax.axhline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.2f}")
    ax.set_xlabel("step")
    ax.set_ylabel("standardised error")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if one:
        top = axes[0]
        top.plot(series, color="black", linewidth=0.6, label="series")
        if truth is not None:
            for a in axes:
                for n, (s, e) in enumerate(true_runs(truth)):
                    a.axvspan(s - 0.5, e - 0.5, color=ANOMALY, alpha=0.2, label="true anomaly" if n == 0 else None)
        top.legend(**legend)
        ax.legend(**legend)
    else:
        present = {lab for lab in labels} if labels is not None else {None}
        handles = [
            Line2D([], [], color=c, linewidth=0.8, label=f"{what} clip")
            for lab, c, what in ((1, ANOMALY, "anomalous"), (0, NORMAL, "normal"), (None, "tab:gray", "unlabelled"))
            if lab in present
        ]
        ax.legend(handles=[*handles, *ax.get_legend_handles_labels()[0]], **legend)
    fig.tight_layout()
    fit_title(fig, axes[0], names[0] if one else f"{len(scores)} clips", fontsize=9)
    fig.tight_layout()
    return fig


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
    """Save :func:`scores_figure` as ``path``; returns it."""
    return save(scores_figure(scores, names, threshold, labels, series, truth, start), path)
