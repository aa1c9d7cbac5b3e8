"""Forecasting: train a CNN-LSTM to predict the next ``horizon`` steps from the last ``lookback`` ones.

Each window is taken relative to its own mean level (after the global per-channel normalisation),
so a trending series stays in the range the model was trained on. The model reads windows
``(N, lookback, F)`` through the ``forecast`` preset (causal conv1d, LSTM) and its ``forecast`` head gives
``(N, horizon, targets)``. The last ``holdout`` steps of the series are kept out of training so that
:func:`cnnlstm.apps.forecast.forecast` can score the forecast against the truth.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..build import preset
from ..data.batch import window_loader
from ..data.series import Normalizer, load_sequence
from ..errors import ConfigError, DataError
from ..model import CNNLSTM
from ..run import DataSpec, ForecastSpec, Kind, SeriesSpec, TrainSummary
from ._lightning import TaskModule, start_run, train_run
from .ensemble import fit_ensemble
from .options import TrainOptions

__all__ = ["FORECAST_TRAINING", "ForecastModule", "fit_forecast", "windows"]

FORECAST_TRAINING = {"epochs": 200, "batch_size": 16, "lr": 3e-3}


class ForecastModule(TaskModule):
    """Mean squared error of the forecast ``(N, horizon, targets)`` against ``batch["target"]``."""

    def loss(self, x: torch.Tensor, batch: dict[str, Any], stage: str) -> torch.Tensor:
        return F.mse_loss(self(x), batch["target"])


def windows(v: np.ndarray, lookback: int, horizon: int, targets: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``(lookback → horizon)`` windows of ``v`` ``(T, F)``: inputs ``(N, lookback, F)``, targets
    ``(N, horizon, k)``, each relative to its input's mean level."""
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
) -> TrainSummary | None:
    """Train a forecaster on one long series and write a run folder.

    Args:
        source: ``aeon:NAME``, a ``.csv`` or a ``.npy`` (see :func:`cnnlstm.data.series.load_sequence`).
        out: the run folder.
        horizon, lookback: steps predicted and steps read.
        targets: the channels to predict (default: all).
        holdout: last steps kept out of training for scoring (default: ``horizon``).
        model_options: replace keys of the ``forecast`` preset.
        options: default ``FORECAST_TRAINING``.
    """
    opts = options or TrainOptions(**FORECAST_TRAINING)
    if opts.ensemble > 1:
        def one(folder: Path, o: TrainOptions) -> TrainSummary | None:
            return fit_forecast(source, folder, horizon, lookback, targets, holdout, model_options, o)

        return fit_ensemble(one, out, opts)
    values, names = load_sequence(source)
    targets = list(range(values.shape[1])) if targets is None else list(targets)
    if not targets or max(targets) >= values.shape[1]:
        raise ConfigError(f"targets must index the {values.shape[1]} channels {names}, got {targets}")
    holdout = horizon if holdout is None else holdout
    train = values[: len(values) - holdout]
    norm = Normalizer.fit([train])
    x, y = windows(norm(train), lookback, horizon, targets)
    folder, resume_from = start_run(out, opts)
    t0 = time.time()
    kw = preset("forecast", **(model_options or {}))
    kw.update(layout="NTF", input_shape=(lookback, values.shape[1]), head="forecast", num_classes=len(targets))
    kw["head_options"] = {"horizon": horizon}
    model = CNNLSTM(**kw)
    module = ForecastModule(model.config.to_dict(), opts.lr, opts.weight_decay, opts.epochs, schedule=opts.schedule)
    loader = window_loader(x, y, opts.batch_size, opts.seed)  # (N, lookback, F) -> (N, horizon, k)
    spec = DataSpec(
        Kind.SERIES_FORECAST,
        SeriesSpec(str(source), values.shape[1], norm.mean, norm.std),
        forecast=ForecastSpec(lookback, horizon, targets, holdout),
    )
    classes = [names[t] for t in targets]
    return train_run(
        folder, module, (loader, None), opts, resume_from, spec, classes, t0=t0,
        data=str(source), train_items=len(x), val_items=0,
    )  # fmt: skip
