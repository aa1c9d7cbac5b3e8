"""The run folder, written and read in one place.

A run folder holds ``config.json`` + ``model.safetensors`` (the kept model, loadable with
``CNNLSTM.from_pretrained(run)``), ``labels.json`` (class names, or a forecaster's target names),
``data.json`` (:class:`~cnnlstm.run.spec.DataSpec`: the kind and how inputs are made), ``run.json``
(:class:`~cnnlstm.run.summary.TrainSummary`), ``metrics.csv`` and ``curves.png``, and Lightning's
``checkpoints/best.ckpt`` and ``last.ckpt`` (written atomically, loaded with ``weights_only=True``).
A file that is missing or damaged is named in one :class:`ConfigError` with what to do.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import atomic_write, write_json
from ..data.datasets import ClipSpec
from ..ensemble import Ensemble, load_model
from ..errors import CnnlstmError, ConfigError
from ..model import CNNLSTM
from ..precision import resolve_precision
from .spec import DataSpec, Kind, SeriesSpec
from .summary import TrainSummary

__all__ = ["Run", "RunFolder", "load_run"]

MODEL_FILES = ("config.json", "model.safetensors", "labels.json", "data.json")


@dataclass
class Run:
    """A trained run: its folder, the model (eval mode), its class names, its data spec, and the precision its
    inference was asked to run in (``"32"`` or ``"bf16"``; the apps run the model inside
    ``with run.model.autocast(run.precision):``). :func:`cnnlstm.export.runtime.load_for_runtime` gives a run whose
    model is its exported graph instead (a ``RuntimeModel``, precision ``"fp32"``, ``"bf16"`` or ``"int8"``)."""

    path: Path
    model: CNNLSTM | Ensemble
    classes: list[str]
    data: DataSpec
    precision: str = "32"

    @property
    def kind(self) -> Kind:
        return self.data.kind

    @property
    def spec(self) -> ClipSpec | SeriesSpec:
        """How inputs are made: a :class:`ClipSpec` for video runs, a :class:`SeriesSpec` for series runs."""
        return self.data.input


class RunFolder:
    """Prepare a run folder for training, write it as training ends, read it back.

    >>> RunFolder("runs/x").last_checkpoint
    PosixPath('runs/x/checkpoints/last.ckpt')
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    # ------------------------------------------------------------------ writing

    def prepare(self, resume: bool = False, overwrite: bool = False) -> Path | None:
        """Check the folder against ``resume``/``overwrite`` and create it; the checkpoint to resume from."""
        if resume and not self.last_checkpoint.is_file():
            raise ConfigError(f"--resume: {self.last_checkpoint} does not exist (nothing to resume in {self.path})")
        if not resume and self.checkpoints.exists():
            if not overwrite:
                raise ConfigError(
                    f"{self.path} already holds a run: use --resume to continue it, --overwrite to start "
                    "it again, or another --out"
                )
            for sub in (self.checkpoints, self.logs):
                shutil.rmtree(sub, ignore_errors=True)
        self.path.mkdir(parents=True, exist_ok=True)
        return self.last_checkpoint if resume else None

    def write_model(self, model: CNNLSTM | Ensemble, classes: list[str], data: DataSpec) -> None:
        """The files :meth:`load` needs: model, labels and data spec."""
        model.save_pretrained(self.path)
        write_json(self.path / "labels.json", list(classes))
        write_json(self.path / "data.json", data.to_dict())

    def write_curves(self, kind: Kind) -> tuple[Path, float | None]:
        """Merge the metrics of the run and its resumptions, plot them (the loss named for ``kind``'s task); the
        best epoch's validation accuracy (the epoch with the lowest validation loss, as the kept model), or None
        without validation."""
        from ..apps.plots import plot_curves, read_epoch_metrics

        parts = sorted(self.logs.glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:]))
        metrics = merge_metrics(parts, self.path / "metrics.csv")
        curves = plot_curves(metrics, self.path / "curves.png", Kind(kind).task)
        m = read_epoch_metrics(metrics)
        acc = dict(m.get("val_acc", []))
        best = min(m.get("val_loss", []), key=lambda ev: ev[1], default=(None, None))[0]
        return curves, None if best not in acc else round(acc[best], 4)

    def write_summary(self, summary: TrainSummary) -> TrainSummary:
        write_json(self.path / "run.json", summary.to_dict())
        return summary

    # ------------------------------------------------------------------ reading

    def read_json(self, name: str) -> Any:
        """A JSON file of the folder; missing or damaged files raise one :class:`ConfigError` naming them."""
        path = self.path / name
        if not path.is_file():
            raise ConfigError(f"{str(self.path)!r} is not a finished cnnlstm run: {name} is missing")
        try:
            return json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path} is damaged ({e}): train the run again, or restore the file") from None

    def data_spec(self) -> DataSpec:
        d = self.read_json("data.json")
        try:
            return DataSpec.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{self.path / 'data.json'} does not describe a run ({e}): train the run again") from None

    def summary(self) -> dict[str, Any] | None:
        """``run.json`` as written by training, or None where it is absent."""
        return self.read_json("run.json") if (self.path / "run.json").is_file() else None

    def load(self, precision: str = "32") -> Run:
        """The trained model (eval mode), class names and data spec.

        ``precision="bf16"``: the run's inference is to run in bfloat16 (see :meth:`CNNLSTM.autocast`);
        ``"auto"``: in bfloat16 where this CPU computes it natively, else float32 (the Run says which).
        """
        precision = resolve_precision(precision)
        for name in MODEL_FILES:
            if not (self.path / name).is_file():
                raise ConfigError(f"{str(self.path)!r} is not a finished cnnlstm run: {name} is missing")
        classes = self.read_json("labels.json")
        data = self.data_spec()
        try:
            model = load_model(self.path)
        except CnnlstmError:
            raise
        except Exception as e:  # a truncated or foreign safetensors file, a config that no longer builds
            raise ConfigError(
                f"{self.path / 'model.safetensors'} or config.json is damaged ({type(e).__name__}: {e}): "
                "train the run again, or restore the files"
            ) from None
        return Run(self.path, model.eval(), classes, data, precision)


def load_run(run: str | Path, precision: str = "32") -> Run:
    """Load a run folder: ``RunFolder(run).load(precision)``."""
    return RunFolder(run).load(precision)


def merge_metrics(parts: list[Path], path: Path) -> Path:
    """Join the metrics of a run and its resumptions (Lightning's CSV logs, one per version) into one CSV."""
    rows: list[dict[str, str]] = []
    columns: list[str] = []
    for part in parts:
        with part.open(newline="") as f:
            reader = csv.DictReader(f)
            columns += [c for c in reader.fieldnames or [] if c not in columns]
            rows += list(reader)

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows(rows)

    return atomic_write(path, write)
