"""A trained run folder, as ``cnnlstm train`` writes it: model, class names, clip spec."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .data.datasets import ClipSpec
from .errors import ConfigError
from .model import CNNLSTM

__all__ = ["Run", "SeriesSpec", "load_run"]


@dataclass
class SeriesSpec:
    """How series reach a run's model: the normaliser fitted on its training split."""

    source: str
    features: int
    mean: list[float]
    std: list[float]
    task: str = "classify"
    lookback: int | None = None
    horizon: int | None = None
    targets: list[int] | None = None
    holdout: int | None = None

    @property
    def normalizer(self):
        from .data.series import Normalizer

        return Normalizer(self.mean, self.std)


@dataclass
class Run:
    """A trained run folder: the model (eval mode), its class names and how inputs are made."""

    path: Path
    model: CNNLSTM
    classes: list[str]
    spec: ClipSpec | SeriesSpec

    @property
    def kind(self) -> str:
        return "series" if isinstance(self.spec, SeriesSpec) else "video"


def load_run(run: str | Path, precision: str = "32") -> Run:
    """Load ``model.safetensors`` + ``config.json``, ``labels.json`` and ``data.json`` from a run folder.

    ``precision="bf16"`` makes the model infer in bfloat16 (see :meth:`CNNLSTM.set_precision`).
    """
    path = Path(run)
    for name in ("config.json", "model.safetensors", "labels.json", "data.json"):
        if not (path / name).is_file():
            raise ConfigError(f"{str(path)!r} is not a finished cnnlstm run: {name} is missing")
    model = CNNLSTM.from_pretrained(path).eval().set_precision(precision)
    classes = json.loads((path / "labels.json").read_text())
    d = json.loads((path / "data.json").read_text())
    d.pop("anomaly", None)  # an anomaly run's threshold and statistics: cnnlstm.train.anomaly reads them
    kind = d.pop("kind", "video")
    if kind.startswith("series"):
        spec: ClipSpec | SeriesSpec = SeriesSpec(**d)
    else:
        spec = ClipSpec.from_dict(d)
    return Run(path, model, classes, spec)
