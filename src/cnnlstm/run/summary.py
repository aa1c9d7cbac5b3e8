"""A training run's summary: what it trained on, how, and how it went; ``run.json`` and the lines people read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .spec import Kind

__all__ = ["TrainSummary"]


@dataclass
class TrainSummary:
    """Returned by every ``fit_*`` function and written to the run folder's ``run.json``.

    ``train_items``/``val_items`` count videos for video runs and series (or windows) for series runs;
    ``run.json`` names them ``train_videos``/``val_videos`` or ``train_series``/``val_series``.
    """

    kind: Kind
    data: str
    classes: list[str]
    train_items: int
    val_items: int
    epochs: int
    seconds: float
    params: int
    model: dict[str, Any]
    options: dict[str, Any]
    curves: str
    best_val_acc: float | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)
    held_out: list[str] | None = None
    index_seconds: float | None = None
    threshold: float | None = None
    stopped: str | None = None  # why training ended

    @property
    def unit(self) -> str:
        return "videos" if Kind(self.kind).modality == "video" else "series"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": Kind(self.kind).value,
            "data": self.data,
            "classes": self.classes,
            f"train_{self.unit}": self.train_items,
            f"val_{self.unit}": self.val_items,
        }
        for k in ("held_out", "index_seconds", "threshold", "stopped"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        d.update(
            skipped=self.skipped,
            best_val_acc=self.best_val_acc,
            epochs=self.epochs,
            seconds=self.seconds,
            model=self.model,
            options=self.options,
            params=self.params,
            curves=self.curves,
        )
        return d

    def lines(self) -> list[str]:
        """What the command prints after training."""
        kind = Kind(self.kind)
        if kind.task == "anomaly":
            head = (
                f"learnt {self.train_items} normal {kind.modality} sequences in {self.seconds} s; threshold "
                f"{self.threshold:.3f} from {self.val_items} held-out normal ones"
            )
        elif kind.task == "forecast":
            head = f"trained a forecaster on {self.train_items} windows in {self.seconds} s"
        else:
            best = f"best val accuracy {self.best_val_acc}" if self.best_val_acc is not None else "trained"
            head = (
                f"{best} after {self.epochs} epochs, {self.train_items} train / {self.val_items} val {self.unit}, "
                f"{self.seconds} s"
            )
        out = [head + (f"; stopped because {self.stopped}" if self.stopped else "")]
        if kind.modality == "video":
            out.append(f"skipped {len(self.skipped)} file(s)" + (":" if self.skipped else ""))
            out += [f"  {s['path']}: {s['reason']}" for s in self.skipped]
        return [*out, f"curves: {self.curves}"]
