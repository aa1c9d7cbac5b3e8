"""Forecast with a trained forecaster: the steps after its training part of a series, scored by MASE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.series import load_sequence
from ..errors import ConfigError, DataError
from ..run import Kind, load_run
from .plots import plot_forecast

__all__ = ["forecast", "forecast_lines", "mase"]


def mase(truth: np.ndarray, pred: np.ndarray, history: np.ndarray, season: int = 1) -> float:
    """Mean absolute scaled error: the forecast's MAE over the in-sample MAE of the seasonal naive forecast."""
    scale = np.mean(np.abs(history[season:] - history[:-season]))
    return float(np.mean(np.abs(truth - pred)) / scale)


@torch.inference_mode()
def forecast(
    run: str | Path, source: str | Path | None = None, season: int = 1, plot: str | Path | None = None
) -> dict[str, Any]:
    """Forecast the next ``horizon`` steps after the run's training part of ``source`` and score them.

    Returns:
        ``{"forecast": (horizon, k), "truth": (horizon, k) or None, "mase": float or None, "png": path,
        "names": [k target names]}``.
    """
    r = load_run(run)
    if r.kind != Kind.SERIES_FORECAST:
        raise ConfigError(f"{run} is a {r.kind} run, not a forecaster (train one with cnnlstm train --task forecast)")
    fc, spec = r.data.forecast, r.spec
    values, names = load_sequence(source or spec.source)
    targets = fc.targets
    cut = len(values) - fc.holdout if fc.holdout else len(values)
    history = values[:cut]
    if len(history) < fc.lookback:
        raise DataError(f"the series has {len(history)} steps before the forecast, fewer than lookback {fc.lookback}")
    window = spec.normalizer(history[-fc.lookback :])  # (lookback, F)
    level = window.mean(axis=0)  # (F,): the window's own level, as in training
    pred_n = r.model(torch.from_numpy(window - level)[None])[0].numpy() + level[targets]  # (horizon, k)
    pred = pred_n * np.asarray(spec.std, np.float32)[targets] + np.asarray(spec.mean, np.float32)[targets]
    truth = values[cut : cut + fc.horizon, targets] if fc.holdout else None
    score = None
    if truth is not None and len(truth) == fc.horizon:
        score = mase(truth, pred, history[:, targets], season)
    png = Path(plot) if plot else Path(run) / "forecast.png"
    title = f"{spec.source}: {fc.horizon}-step forecast" + (f", MASE {score:.3f}" if score is not None else "")
    target_names = [names[t] for t in targets]
    plot_forecast(history[:, targets], pred, truth, target_names, png, title=title)
    return {"forecast": pred, "truth": truth, "mase": score, "png": str(png), "names": target_names}


def forecast_lines(result: dict[str, Any], season: int = 1) -> list[str]:
    """What the command prints: each target's forecast, the MASE where the truth is known, the plot."""
    values = result["forecast"]  # (horizon, k)
    out = [f"{name}: " + " ".join(f"{v:.1f}" for v in values[:, j]) for j, name in enumerate(result["names"])]
    if result["mase"] is not None:
        out.append(f"MASE {result['mase']:.3f} (against the seasonal naive forecast, season {season})")
    return [*out, f"plot: {result['png']}"]
