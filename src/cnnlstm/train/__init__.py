"""Training glue: the Lightning module, the run folder, evaluation and prediction.

With ``cli.py`` the only package that knows Lightning. Its submodules load on first use, so
that plotting, evaluation and prediction do not import Lightning.
"""

from __future__ import annotations

import importlib

__all__ = ["TrainOptions", "evaluate", "fit_series", "fit_videos", "predict"]

_WHERE = {
    "TrainOptions": "fit",
    "fit_videos": "fit",
    "fit_series": "fit",
    "evaluate": "evaluate",
    "predict": "evaluate",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
