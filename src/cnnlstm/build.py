"""Named model presets: the keyword arguments of :class:`~cnnlstm.CNNLSTM` that each task starts from.

``input_shape``, ``layout``, ``num_classes`` and task heads come from the data when a run trains; a
preset holds only the choices of architecture. Options given by a user replace a preset's keys
(``backbone_options`` as a whole).

>>> preset("series")["backbone"]
'conv1d'
>>> preset("demo", hidden_size=32)["hidden_size"]
32
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ConfigError

__all__ = ["PRESETS", "preset"]

PRESETS: dict[str, dict[str, Any]] = {
    # the library's defaults for clips: small CNN, gap bridge, LSTM 256
    "video": {},
    # small enough for 2 CPU cores; "grid" keeps the coarse layout that motion direction needs
    "demo": {"backbone_options": {"channels": (16, 32, 64)}, "bridge": "grid", "hidden_size": 64},
    # dilated conv1d, time max-pooled by 4, bidirectional LSTM, mean over steps (docs/series-accuracy.md)
    "series": {
        "backbone": "conv1d",
        "backbone_options": {"channels": (64, 64, 64), "kernel_size": 7, "dilated": True, "pool": 4},
        "bridge": "none",
        "hidden_size": 128,
        "bidirectional": True,
        "head": "mean",
    },
    # causal conv1d before an LSTM; the head predicts ``horizon`` steps of each target
    "forecast": {
        "backbone": "conv1d",
        "backbone_options": {"channels": (32, 32), "kernel_size": 3, "causal": True, "dilated": True},
        "bridge": "none",
        "hidden_size": 64,
    },
    # per-frame predictions of the next frames; flatten keeps where things are
    "video-anomaly": {"backbone_options": {"channels": (16, 32, 64)}, "bridge": "flatten", "hidden_size": 256},
    "series-anomaly": {
        "backbone": "conv1d",
        "backbone_options": {"channels": (32, 32), "kernel_size": 5, "causal": True},
        "bridge": "none",
        "hidden_size": 64,
    },
}


def preset(name: str, **overrides: Any) -> dict[str, Any]:
    """A fresh copy of preset ``name`` with ``overrides`` replacing its keys."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}: expected one of {', '.join(PRESETS)}")
    return {**copy.deepcopy(PRESETS[name]), **overrides}
