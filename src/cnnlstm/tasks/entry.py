"""One entry for ``cnnlstm train``: what the data is decides the task's defaults, given options replace them.

Videos train a clip classifier from the library's defaults (the ``video`` preset, :class:`ClipSpec`'s clips,
``VIDEO_TRAINING``); labelled series train the ``series`` preset on the
whole training split (``SERIES_TRAINING``); ``task="forecast"`` trains a forecaster on one long series.
Only the options a user gave are passed in; everything else is the task's own default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..build import ModelOptions, model_kwargs
from ..data.datasets import ClipSpec
from ..data.series import is_series_source
from ..errors import ConfigError, DataError
from ..run import TrainSummary
from .options import VIDEO_TRAINING, TrainOptions

__all__ = ["TASKS", "train"]

TASKS = ("classify", "forecast")
_SOURCES = "videos: a folder or a CSV manifest; series: aeon:NAME, .npz, .npy or .csv"


def train(
    data: str | Path,
    out: str | Path,
    task: str = "classify",
    model: ModelOptions | None = None,
    clip: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    horizon: int = 12,
    lookback: int = 24,
) -> TrainSummary | None:
    """Train on ``data`` into the run folder ``out``.

    Args:
        data: videos (``ROOT/CLASS/*``, ``ROOT/train|val|test/CLASS/*``, a CSV manifest) or series
            (``aeon:NAME``, ``.npz``, ``.npy``, ``.csv``); for ``task="forecast"`` one long series.
        out: the run folder.
        task: ``"classify"`` or ``"forecast"``.
        model: the model options given; the rest come from the task's preset (:mod:`cnnlstm.build`).
        clip: :class:`~cnnlstm.data.datasets.ClipSpec` fields given (videos).
        options: :class:`TrainOptions` fields given; the rest are the task's defaults.
        horizon, lookback: forecasting: steps predicted and steps read.
    """
    given = dict(options or {})
    # a misused option fails here, with its own message, before the data is looked at
    TrainOptions(**given)
    ClipSpec(**(clip or {}))
    if task == "forecast":
        from .forecast import FORECAST_TRAINING, fit_forecast

        opts = TrainOptions(**{**FORECAST_TRAINING, **given})
        return fit_forecast(data, out, horizon, lookback, model_options=model_kwargs("forecast", model), options=opts)
    if task != "classify":
        raise ConfigError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
    if is_series_source(data):
        from .classify import SERIES_TRAINING, fit_series

        defaults = dict(SERIES_TRAINING)
        if "epochs" in given:  # epochs asked for are trained: the default time budget gives way (--max-time not)
            defaults.pop("max_time")
        return fit_series(data, out, model_kwargs("series", model), TrainOptions(**{**defaults, **given}))
    path = Path(data)
    if not path.exists():
        raise DataError(f"{str(data)!r} does not exist ({_SOURCES})")
    if path.is_file() and path.suffix.lower() != ".csv":
        raise DataError(f"{str(data)!r}: cannot train on a {path.suffix or 'extension-less'} file ({_SOURCES})")
    from .classify import fit_videos

    opts = TrainOptions(**{**VIDEO_TRAINING, **given})
    return fit_videos(data, out, model_kwargs("video", model), ClipSpec(**(clip or {})), opts)
