"""Training, one task per module: ``classify`` (videos, series), ``forecast``, ``anomaly``.

With the command line the only package that knows Lightning. Submodules load on first use, so that
reading :class:`TrainOptions` does not import Lightning.
"""

from __future__ import annotations

import importlib

__all__ = ["TrainOptions", "fit_anomaly", "fit_forecast", "fit_series", "fit_videos", "train"]

_WHERE = {
    "TrainOptions": "options",
    "fit_videos": "classify",
    "fit_series": "classify",
    "fit_forecast": "forecast",
    "fit_anomaly": "anomaly",
    "train": "entry",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
