"""What a run folder's ``data.json`` says: the run's kind and how its inputs are made, typed and versioned.

One vocabulary of kinds, ``MODALITY-TASK``: ``video-classify``, ``series-classify``, ``series-forecast``,
``video-anomaly``, ``series-anomaly``. ``data.json`` is ``{"format": 2, "kind": ..., "input": {...}}`` plus
``"forecast"`` or ``"anomaly"`` for those tasks; folders written before the format had a number (format 1:
a bare clip spec, or ``"kind": "series" | "video-anomaly" | "series-anomaly"``) still load.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from ..anomaly import AnomalyStats
from ..data.datasets import ClipSpec
from ..errors import ConfigError

__all__ = ["FORMAT", "DataSpec", "ForecastSpec", "Kind", "SeriesSpec"]

FORMAT = 2


class Kind(str, Enum):
    """What a run learnt: ``MODALITY-TASK``."""

    VIDEO_CLASSIFY = "video-classify"
    SERIES_CLASSIFY = "series-classify"
    SERIES_FORECAST = "series-forecast"
    VIDEO_ANOMALY = "video-anomaly"
    SERIES_ANOMALY = "series-anomaly"

    def __str__(self) -> str:
        return self.value

    @property
    def modality(self) -> str:
        """``"video"`` or ``"series"``."""
        return self.value.split("-")[0]

    @property
    def task(self) -> str:
        """``"classify"``, ``"forecast"`` or ``"anomaly"``."""
        return self.value.split("-")[1]


@dataclass
class SeriesSpec:
    """How series reach a run's model: the source it trained on and the normaliser fitted on its training part."""

    source: str
    features: int
    mean: list[float]
    std: list[float]

    @property
    def normalizer(self):
        from ..data.series import Normalizer

        return Normalizer(self.mean, self.std)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ForecastSpec:
    """A forecaster's windows: ``lookback`` steps read, ``horizon`` predicted for channels ``targets``;
    the last ``holdout`` steps of the source were kept out of training."""

    lookback: int
    horizon: int
    targets: list[int]
    holdout: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DataSpec:
    """A run's ``data.json``: its kind, its input spec, and the task's own part (forecast windows, anomaly
    statistics)."""

    kind: Kind
    input: ClipSpec | SeriesSpec
    forecast: ForecastSpec | None = None
    anomaly: AnomalyStats | None = None

    def __post_init__(self):
        self.kind = Kind(self.kind)
        want = ClipSpec if self.kind.modality == "video" else SeriesSpec
        if not isinstance(self.input, want):
            raise ConfigError(f"a {self.kind} run's input is a {want.__name__}, got {type(self.input).__name__}")
        if (self.kind.task == "forecast") != (self.forecast is not None):
            raise ConfigError(f"a {self.kind} run {'needs' if self.forecast is None else 'takes no'} forecast windows")
        if (self.kind.task == "anomaly") != (self.anomaly is not None):
            raise ConfigError(f"a {self.kind} run {'needs' if self.anomaly is None else 'takes no'} anomaly statistics")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": FORMAT, "kind": self.kind.value, "input": self.input.to_dict()}
        if self.forecast is not None:
            d["forecast"] = self.forecast.to_dict()
        if self.anomaly is not None:
            d["anomaly"] = self.anomaly.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        """Parse either format; a field that does not belong raises :class:`ConfigError` naming it."""
        if not isinstance(d, dict):
            raise ConfigError(f"expected a JSON object, got {type(d).__name__}")
        d = dict(d)
        fmt = d.pop("format", 1)
        if fmt == 1:
            return _from_format1(d)
        if fmt != FORMAT:
            raise ConfigError(f"format {fmt} is newer than this cnnlstm reads ({FORMAT}): upgrade cnnlstm")
        unknown = sorted(set(d) - {"kind", "input", "forecast", "anomaly"})
        if unknown:
            raise ConfigError(f"unknown keys {unknown}")
        kind = _kind(d.get("kind"))
        return cls(
            kind,
            _build(ClipSpec if kind.modality == "video" else SeriesSpec, d.get("input")),
            _build(ForecastSpec, d["forecast"]) if "forecast" in d else None,
            _build(AnomalyStats, d["anomaly"]) if "anomaly" in d else None,
        )


def _kind(value: Any) -> Kind:
    try:
        return Kind(value)
    except ValueError:
        raise ConfigError(f"unknown run kind {value!r}: expected one of {', '.join(k.value for k in Kind)}") from None


def _build(cls: type, d: Any) -> Any:
    """``cls(**d)`` with a message that names the class and the keys it takes."""
    if not isinstance(d, dict):
        raise ConfigError(f"{cls.__name__} wants a JSON object, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys {unknown}: expected some of {sorted(names)}")
    try:
        return cls(**d)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{cls.__name__}: {e}") from None


def _from_format1(d: dict[str, Any]) -> DataSpec:
    """Folders written before ``data.json`` had a format number."""
    anomaly = d.pop("anomaly", None)
    kind = d.pop("kind", "video")
    if kind == "video":
        return DataSpec(Kind.VIDEO_CLASSIFY, _build(ClipSpec, d))
    if kind == "video-anomaly":
        return DataSpec(Kind.VIDEO_ANOMALY, _build(ClipSpec, d), anomaly=_build(AnomalyStats, anomaly))
    series = {k: d.pop(k) for k in ("source", "features", "mean", "std") if k in d}
    if kind == "series-anomaly":
        return DataSpec(Kind.SERIES_ANOMALY, _build(SeriesSpec, series), anomaly=_build(AnomalyStats, anomaly))
    if kind != "series":
        raise ConfigError(f"unknown run kind {kind!r}")
    if d.pop("task", "classify") == "forecast":
        return DataSpec(Kind.SERIES_FORECAST, _build(SeriesSpec, series), forecast=_build(ForecastSpec, d))
    d = {k: v for k, v in d.items() if v is not None}  # format 1 wrote unused forecast fields as null
    if d:
        raise ConfigError(f"unknown keys {sorted(d)}")
    return DataSpec(Kind.SERIES_CLASSIFY, _build(SeriesSpec, series))
