"""Evaluate a run on labelled videos or series: accuracy, macro-F1, a per-class table, a confusion-matrix PNG."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.batch import SkipLog, video_loader
from ..data.datasets import VideoDataset, VideoItem, find_videos
from ..errors import DataError, require
from ..lengths import valid_mask
from ..model import CNNLSTM
from ..run import Run, RunFolder
from .plots import plot_confusion

__all__ = ["EvalResult", "class_scores", "evaluate"]


@dataclass
class EvalResult:
    """What :func:`evaluate` measured; ``to_dict()`` is the command's ``--json``, ``lines()`` its table."""

    accuracy: float
    macro_f1: float
    per_class: list[dict[str, Any]]
    confusion: list[list[int]]
    videos: int
    subset: str
    confusion_png: str
    skipped: list[dict[str, str]] = field(default_factory=list)
    modality: str = "video"
    runtime: str = "torch 32"  # which runtime and precision ran

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [f"accuracy {self.accuracy:.4f}   macro-F1 {self.macro_f1:.4f}   ({self.videos} items: {self.subset})"]
        width = max(len("class"), *(len(r["class"]) for r in self.per_class))
        out.append(f"{'class'.ljust(width)}  precision  recall     f1  support")
        out += [
            f"{r['class'].ljust(width)}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}  {r['support']:7d}"
            for r in self.per_class
        ]
        if self.modality == "video":  # files that could not be decoded
            out.append(f"skipped {len(self.skipped)} file(s)" + (":" if self.skipped else ""))
            out += [f"  {s['path']}: {s['reason']}" for s in self.skipped]
        return [*out, f"ran on: {self.runtime}", f"confusion matrix: {self.confusion_png}"]


@torch.inference_mode()
def class_scores(model: CNNLSTM, batch: dict[str, Any]) -> torch.Tensor:
    """Class probabilities ``(N, classes)`` of a clip batch; dense windows ``(N, W, T, ...)`` are averaged."""
    video, lengths = batch["video"], batch["lengths"]
    if video.dim() == 6:  # (N, W, T, C, H, W'): one clip per window, padded windows masked out
        n, w = video.shape[:2]
        probs = model(video.flatten(0, 1)).softmax(-1).unflatten(0, (n, w))  # (N, W, classes)
        counts = batch["windows"] if batch.get("windows") is not None else torch.full((n,), w)
        mask = valid_mask(counts.to(probs.device), w).unsqueeze(-1)  # (N, W, 1)
        return (probs * mask).sum(1) / counts.to(probs.device).unsqueeze(1)  # (N, classes)
    return model(video, lengths).softmax(-1)


def evaluate(
    run: str | Path,
    data: str | Path,
    split: str | None = "test",
    sampling: str | None = None,
    batch_size: int = 8,
    workers: int = 0,
    out: str | Path | None = None,
    all_videos: bool = False,
    precision: str = "32",
    runtime: str = "torch",
    export: str | Path | None = None,
) -> EvalResult:
    """Accuracy, macro-F1, a per-class table and a confusion-matrix PNG for a run on labelled data.

    Args:
        run: the run folder.
        data: videos laid out as for training (with split folders, ``split`` picks one), or for a series
            run a series source (its ``split`` part).
        split: which split to read. Videos without split folders: the ones the run held out for
            validation are evaluated (``all_videos`` for every one).
        sampling: override the run's sampling (``dense`` averages the scores over windows).
        batch_size, workers: loading.
        out: where to write the confusion matrix (default: the run folder): ``confusion.png``, or with
            ``all_videos`` honoured (no split folders) ``confusion-all.png``, so the held-out one stays.
        precision, runtime, export: ``"32"``/``"fp32"``, ``"bf16"`` (opt-in) or ``"int8"``; ``"torch"``, or the
            run's exported graph in ``"onnxruntime"`` or ``"openvino"`` from ``export`` (default ``RUN/export``).
    """
    from ..export.runtime import load_for_runtime, ran_on

    metrics = require("sklearn.metrics", "train", "evaluation metrics")
    r = load_for_runtime(run, runtime, precision, export)
    with r.model.autocast(r.precision):
        if r.kind.modality == "series":
            y_true, y_pred, subset, skips = _series_predictions(r, data, split, batch_size)
            every = None
        else:
            items, refused, subset, every = _video_items(r, Path(data), split, all_videos)
            y_true, y_pred, skips = _video_predictions(r, items, refused, Path(data), sampling, batch_size, workers)
    labels = list(range(len(r.classes)))
    p, rec, f1, support = metrics.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    cm = metrics.confusion_matrix(y_true, y_pred, labels=labels)
    acc = float(metrics.accuracy_score(y_true, y_pred))
    png = _plot(r, cm, Path(out or r.path), f"{Path(str(data)).name or data}: accuracy {acc:.3f}", every)
    per_class = [
        {"class": c, "precision": float(p[i]), "recall": float(rec[i]), "f1": float(f1[i]), "support": int(support[i])}
        for i, c in enumerate(r.classes)
    ]
    return EvalResult(
        accuracy=acc,
        macro_f1=float(np.mean([f1[i] for i in labels if support[i] > 0])),
        per_class=per_class,
        confusion=cm.tolist(),
        videos=len(y_true),
        subset=subset,
        confusion_png=str(png),
        skipped=[{"path": k, "reason": v} for k, v in skips.seen.items()],
        modality=r.kind.modality,
        runtime=ran_on(r),
    )


def _plot(r: Run, cm: np.ndarray, folder: Path, title: str, every: bool | None) -> Path:
    """The confusion-matrix PNG in ``folder``: ``confusion.png``, or with ``--all`` honoured (``every`` not None)
    ``confusion-all.png``, its title saying whether the run trained on some of these videos."""
    png = folder / ("confusion.png" if every is None else "confusion-all.png")
    png.parent.mkdir(parents=True, exist_ok=True)
    if every is not None:
        title += f"\nall {int(cm.sum())} videos" + (", training ones included" if every else "")
    plot_confusion(cm, r.classes, png, title=title)
    return png


def _video_items(r: Run, data: Path, split, all_videos: bool):
    """The labelled videos to evaluate (labels in the run's class order), refused files, which they are, and
    with ``all_videos`` honoured (no split folders) whether they include the run's training videos, else None."""
    has_splits = data.is_dir() and any((data / s).is_dir() for s in ("train", "val", "test"))
    items, classes, refused = find_videos(data, split if has_splits else None)
    summary = RunFolder(r.path).summary() or {}
    held_out = summary.get("held_out") if not has_splits and not all_videos else None
    every = None
    if all_videos and not has_splits:  # the run trained on this folder, or held some of these videos out of it
        recorded = {str(Path(p).resolve()) for p in summary.get("held_out") or []}
        trained_on = "data" in summary and Path(summary["data"]).resolve() == data.resolve()
        every = trained_on or any(str(Path(it.path).resolve()) in recorded for it in items)
    if held_out is not None:
        wanted = {str(Path(p).resolve()) for p in held_out}
        kept = [it for it in items if str(Path(it.path).resolve()) in wanted]
        if kept:
            items = kept
        else:
            held_out = None
    unknown = sorted(set(classes) - set(r.classes))
    if unknown:
        raise DataError(
            f"{data} has classes the model was not trained on: {', '.join(unknown)} (it knows {', '.join(r.classes)})"
        )
    remap = [r.classes.index(c) for c in classes]
    items = [VideoItem(it.path, remap[it.label], it.start, it.end) for it in items]
    subset = "held-out validation videos of the run" if held_out is not None else (split if has_splits else "all")
    return items, refused, subset, every


def _video_predictions(r: Run, items: list[VideoItem], refused, data: Path, sampling, batch_size: int, workers: int):
    """True and predicted labels of a video run on ``items`` of ``data``; the skipped files."""
    ds = VideoDataset(items, r.classes, spec=r.spec.for_scoring(sampling), refused=refused)
    skips = SkipLog()
    skips.add(ds.skipped, warn=False)
    y_true, y_pred = [], []
    for batch in video_loader(ds, batch_size, workers):
        skips.add(batch["skipped"])
        if batch["video"] is None:
            continue
        y_pred += class_scores(r.model, batch).argmax(-1).tolist()
        y_true += batch["label"].tolist()
    if not y_true:
        raise DataError(f"no video of {data} could be evaluated ({len(skips)} skipped)")
    return y_true, y_pred, skips


def _series_predictions(r: Run, source, split, batch_size: int):
    """True and predicted labels of a series run on ``source``'s test split (or the whole file)."""
    from ..data.batch import series_loader
    from ..data.series import SeriesDataset, load_series

    ds = SeriesDataset(load_series(source, split or "test", r.classes), r.spec.normalizer)
    y_true, y_pred = [], []
    with torch.inference_mode():
        for b in series_loader(ds, batch_size, pad_to=r.model.fixed_steps):
            y_pred += r.model(b["series"], b["lengths"]).argmax(-1).tolist()
            y_true += b["label"].tolist()
    return y_true, y_pred, f"{split or 'test'} split of {source}", SkipLog()
