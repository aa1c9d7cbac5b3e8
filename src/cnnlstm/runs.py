"""A trained run folder, as ``cnnlstm train`` writes it: model, class names, clip spec."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .data.datasets import ClipSpec
from .errors import ConfigError
from .model import CNNLSTM

__all__ = ["Run", "load_run"]


@dataclass
class Run:
    """A trained run folder: the model (eval mode), its class names and its clip spec."""

    path: Path
    model: CNNLSTM
    classes: list[str]
    spec: ClipSpec


def load_run(run: str | Path) -> Run:
    """Load ``model.safetensors`` + ``config.json``, ``labels.json`` and ``data.json`` from a run folder."""
    path = Path(run)
    for name in ("config.json", "model.safetensors", "labels.json", "data.json"):
        if not (path / name).is_file():
            raise ConfigError(f"{str(path)!r} is not a finished cnnlstm run: {name} is missing")
    model = CNNLSTM.from_pretrained(path).eval()
    classes = json.loads((path / "labels.json").read_text())
    spec = ClipSpec.from_dict(json.loads((path / "data.json").read_text()))
    return Run(path, model, classes, spec)
