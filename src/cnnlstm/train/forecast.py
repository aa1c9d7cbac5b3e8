"""Forecasting: train a CNN-LSTM to predict the next ``h`` steps from the last ``lookback`` ones; forecast; MASE.

Each window is taken relative to its own mean level (after the global per-channel normalisation),
so a trending series stays in the range the model was trained on. The model reads windows
``(N, lookback, F)`` through a causal conv1d backbone and an LSTM, and its ``forecast`` head gives
``(N, horizon, targets)``. The last ``holdout`` steps of the series are kept out
of training so that the forecast can be scored against the truth (MASE against the seasonal naive forecast).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.series import Normalizer, load_sequence
from ..errors import ConfigError, DataError
from ..model import CNNLSTM
from ..runs import load_run
from .fit import TrainOptions, _finish, _fit, _prepare, _summary, window_loader

__all__ = ["fit_forecast", "forecast", "mase"]


def _windows(v: np.ndarray, lookback: int, horizon: int, targets: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``(lookback → horizon)`` windows: inputs ``(N, lookback, F)``, targets ``(N, horizon, k)``."""
    n = len(v) - lookback - horizon + 1
    if n < 1:
        raise DataError(f"the training part has {len(v)} steps: too short for lookback {lookback} + horizon {horizon}")
    x = np.stack([v[i : i + lookback] for i in range(n)])  # (N, lookback, F)
    y = np.stack([v[i + lookback : i + lookback + horizon, targets] for i in range(n)])  # (N, horizon, k)
    level = x.mean(axis=1, keepdims=True)  # (N, 1, F): each window relative to its own level, so a trend
    return torch.from_numpy(x - level), torch.from_numpy(y - level[:, :, targets])  # does not leave the range


def fit_forecast(
    source: str | Path,
    out: str | Path,
    horizon: int = 12,
    lookback: int = 24,
    targets: list[int] | None = None,
    holdout: int | None = None,
    model_options: dict[str, Any] | None = None,
    options: TrainOptions | None = None,
) -> dict[str, Any]:
    """Train a forecaster on one long series and write a run folder.

    Args:
        source: ``aeon:NAME``, a ``.csv`` or a ``.npy`` (see :func:`cnnlstm.data.series.load_sequence`).
        out: the run folder.
        horizon, lookback: steps predicted and steps read.
        targets: the channels to predict (default: all).
        holdout: last steps kept out of training for scoring (default: ``horizon``).
        model_options, options: as for classification.
    """
    opts = options or TrainOptions(epochs=200, batch_size=16, lr=3e-3)
    out = Path(out)
    values, names = load_sequence(source)
    targets = list(range(values.shape[1])) if targets is None else list(targets)
    if not targets or max(targets) >= values.shape[1]:
        raise ConfigError(f"targets must index the {values.shape[1]} channels {names}, got {targets}")
    holdout = horizon if holdout is None else holdout
    train = values[: len(values) - holdout]
    norm = Normalizer.fit([train])
    x, y = _windows(norm(train), lookback, horizon, targets)
    resume_from = _prepare(out, opts)
    t0 = time.time()
    model_kw = {
        "backbone": "conv1d",
        "backbone_options": {"channels": (32, 32), "kernel_size": 3, "causal": True, "dilated": True},
        "bridge": "none",
        "hidden_size": 64,
        **(model_options or {}),
    }
    model_kw.update(
        layout="NTF",
        input_shape=(lookback, values.shape[1]),
        head="forecast",
        num_classes=len(targets),
        head_options={"horizon": horizon},
    )
    model = CNNLSTM(**model_kw)
    loader = window_loader(opts, x, y)  # (N, lookback, F) -> (N, horizon, k)
    trainer, ckpt, module = _fit(model, loader, None, out, opts, resume_from, task="forecast")
    if not trainer.is_global_zero:
        return {}
    data_json = {
        "kind": "series",
        "source": str(source),
        "features": values.shape[1],
        "mean": norm.mean,
        "std": norm.std,
        "task": "forecast",
        "lookback": lookback,
        "horizon": horizon,
        "targets": targets,
        "holdout": holdout,
    }
    curves, _ = _finish(out, trainer, ckpt, module, [names[t] for t in targets], data_json)
    return _summary(
        out,
        model,
        opts,
        trainer,
        t0,
        curves,
        None,
        data=str(source),
        classes=[names[t] for t in targets],
        train_series=len(x),
        val_series=0,
        skipped=[],
    )


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
        ``{"forecast": (horizon, k), "truth": (horizon, k) or None, "mase": float or None, "png": path}``.
    """
    import json

    r = load_run(run)
    d = json.loads((Path(run) / "data.json").read_text())
    if d.get("task") != "forecast":
        raise ConfigError(f"{run} is not a forecasting run (train one with cnnlstm forecast-train)")
    values, names = load_sequence(source or d["source"])
    lookback, horizon, holdout, targets = d["lookback"], d["horizon"], d["holdout"], d["targets"]
    cut = len(values) - holdout if holdout else len(values)
    history = values[:cut]
    if len(history) < lookback:
        raise DataError(f"the series has {len(history)} steps before the forecast, fewer than lookback {lookback}")
    norm = r.spec.normalizer
    window = norm(history[-lookback:])  # (lookback, F)
    level = window.mean(axis=0)  # (F,): the window's own level, as in training
    pred_n = r.model(torch.from_numpy(window - level)[None])[0].numpy() + level[targets]  # (horizon, k)
    mean = np.asarray(d["mean"], np.float32)[targets]
    std = np.asarray(d["std"], np.float32)[targets]
    pred = pred_n * std + mean
    truth = values[cut : cut + horizon, targets] if holdout else None
    score = None
    if truth is not None and len(truth) == horizon:
        score = mase(truth, pred, history[:, targets], season)
    png = Path(plot) if plot else Path(run) / "forecast.png"
    from .plots import plot_forecast

    plot_forecast(
        history[:, targets],
        pred,
        truth,
        [names[t] for t in targets],
        png,
        title=f"{d['source']}: {horizon}-step forecast" + (f", MASE {score:.3f}" if score is not None else ""),
    )
    return {"forecast": pred, "truth": truth, "mase": score, "png": str(png), "names": [names[t] for t in targets]}
