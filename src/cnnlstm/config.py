"""``CNNLSTMConfig``: everything needed to rebuild a :class:`~cnnlstm.CNNLSTM`, saved as ``config.json``."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

__all__ = ["CNNLSTMConfig"]


@dataclass
class CNNLSTMConfig:
    """Everything needed to rebuild a :class:`CNNLSTM`; saved as ``config.json`` beside the weights.

    ``backbone`` and ``bridge`` are names (``"custom"`` for a module a config cannot rebuild); the
    builder (:func:`cnnlstm.build.build_parts`) turns a config into the model's parts. ``rnn_options`` are
    the recurrent layer's own options beyond the shared ones (a ConvLSTM's ``kernel_size``); a config.json
    written before they existed loads with none. ``arrangement`` puts the RNN after the CNN (``"sequential"``) or,
    for series, beside it (``"parallel"``, LSTM-FCN; :mod:`cnnlstm.layers.parallel`), with ``arrangement_options``;
    a config.json written before them loads as ``"sequential"``.
    """

    backbone: str | None = None
    backbone_options: dict[str, Any] = field(default_factory=dict)
    bridge: str | None = None
    bridge_options: dict[str, Any] = field(default_factory=dict)
    rnn: str = "lstm"
    rnn_options: dict[str, Any] = field(default_factory=dict)
    hidden_size: int = 256
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    head: str = "last"
    head_options: dict[str, Any] = field(default_factory=dict)
    arrangement: str = "sequential"
    arrangement_options: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 10
    input_shape: tuple = (16, 3, 112, 112)
    layout: str = "NTCHW"
    bn: str | None = None
    chunk_size: int | None = None
    motion: str = "none"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CNNLSTMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown CNNLSTM config keys {unknown}: expected some of {sorted(known)}")
        d = dict(d)
        if "input_shape" in d:
            d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> CNNLSTMConfig:
        return cls.from_dict(json.loads(text))
