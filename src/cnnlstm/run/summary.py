"""A training run's summary: what it trained on, how, and how it went; ``run.json`` and the lines people read."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .spec import Kind

__all__ = ["ROUGH_BELOW", "TrainSummary"]

# a threshold set on fewer held-out normal sequences than this cannot hold a 5% false-alarm rate to within a few
# points: the summary says so
ROUGH_BELOW = 20


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
    members: list[dict[str, Any]] | None = None  # an ensemble's members: folder, seed, epochs, seconds, stopped

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
        for k in ("held_out", "index_seconds", "threshold", "stopped", "members"):
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
            few = self.val_items < ROUGH_BELOW
            head = (
                f"learnt {self.train_items} normal {kind.modality} sequences in {self.seconds} s; threshold "
                f"{self.threshold:.3f}, set on {self.val_items} held-out normal sequence{'s' * (self.val_items != 1)}"
                + (" (too few for a reliable false-alarm rate: give more normal data)" if few else "")
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
        if self.members:
            out.append(f"an ensemble of {len(self.members)}, averaged in probability; each member's run:")
            out += [f"  {m['folder']} (seed {m['seed']}): {m['epochs']} epochs, {m['seconds']} s" for m in self.members]
        return [*out, f"curves: {self.curves}"]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainSummary:
        """Read back what :meth:`to_dict` wrote (``run.json``)."""
        unit = "videos" if Kind(d["kind"]).modality == "video" else "series"
        names = {f.name for f in fields(cls)} - {"train_items", "val_items"}
        return cls(
            **{k: v for k, v in d.items() if k in names},
            train_items=d[f"train_{unit}"],
            val_items=d[f"val_{unit}"],
        )
