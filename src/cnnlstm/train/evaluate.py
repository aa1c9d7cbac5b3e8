"""Evaluate a run on labelled videos, and predict labels for new ones, sampling as the run trained."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.datasets import ClipSpec, SkipLog, VideoDataset, VideoItem, _try_probe, collate_clips, find_videos
from ..errors import DataError, require
from ..model import CNNLSTM
from ..runs import Run, load_run
from .plots import plot_confusion

__all__ = ["evaluate", "predict"]


def _spec_for(run: Run, sampling: str | None) -> ClipSpec:
    d = run.spec.to_dict()
    if sampling:
        d["sampling"] = sampling
    elif d["sampling"] == "random":
        d["sampling"] = "uniform"  # deterministic scoring for a model trained on random clips
    return ClipSpec.from_dict(d)


@torch.inference_mode()
def _scores(model: CNNLSTM, batch: dict[str, Any]) -> torch.Tensor:
    """Class probabilities ``(N, classes)``; dense windows ``(N, W, T, ...)`` are averaged."""
    video, lengths = batch["video"], batch["lengths"]
    if video.dim() == 6:  # (N, W, T, C, H, W'): one clip per window, padded windows masked out
        n, w = video.shape[:2]
        probs = model(video.flatten(0, 1)).softmax(-1).unflatten(0, (n, w))  # (N, W, classes)
        counts = batch["windows"] if batch.get("windows") is not None else torch.full((n,), w)
        mask = (torch.arange(w) < counts.unsqueeze(1)).unsqueeze(-1)  # (N, W, 1)
        return (probs * mask).sum(1) / counts.unsqueeze(1)
    return model(video, lengths).softmax(-1)


def _loader(ds, batch_size: int, workers: int):
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate_clips)


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
) -> dict[str, Any]:
    """Accuracy, macro-F1, a per-class table and a confusion-matrix PNG for a run on labelled videos.

    Args:
        run: the run folder.
        data: videos laid out as for training; with split folders, ``split`` picks one.
        split: which split to read when the data has split folders. Without split folders the
            videos that the run held out for validation are evaluated (``all_videos`` for every one).
        sampling: override the run's sampling (``dense`` averages the scores over windows).
        batch_size, workers: loading.
        out: where to write ``confusion.png`` (default: the run folder).
        precision: ``"32"`` or ``"bf16"`` (bfloat16 inference, opt-in).

    Returns:
        ``{"accuracy", "macro_f1", "per_class": [...], "confusion": [[...]], "videos", "skipped": [...],
        "confusion_png"}``.
    """
    metrics = require("sklearn.metrics", "train", "evaluation metrics")
    r = load_run(run, precision)
    if r.kind == "series":
        y_true, y_pred, subset, skips = _series_predictions(r, data, split, batch_size)
    else:
        y_true, y_pred, subset, skips = _video_predictions(
            r, Path(data), split, sampling, batch_size, workers, all_videos
        )
    name = Path(str(data)).name or str(data)
    labels = list(range(len(r.classes)))
    p, rec, f1, support = metrics.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = [i for i in labels if support[i] > 0]
    cm = metrics.confusion_matrix(y_true, y_pred, labels=labels)
    png = Path(out or r.path) / "confusion.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    acc = float(np.mean(np.array(y_true) == np.array(y_pred)))
    plot_confusion(cm, r.classes, png, title=f"{name}: accuracy {acc:.3f}")
    return {
        "accuracy": acc,
        "macro_f1": float(np.mean([f1[i] for i in present])),
        "per_class": [
            {
                "class": r.classes[i],
                "precision": float(p[i]),
                "recall": float(rec[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in labels
        ],
        "confusion": cm.tolist(),
        "videos": len(y_true),
        "subset": subset,
        "skipped": [{"path": k, "reason": v} for k, v in skips.seen.items()],
        "confusion_png": str(png),
    }


def _video_predictions(r: Run, data: Path, split, sampling, batch_size: int, workers: int, all_videos: bool):
    """True and predicted labels of a video run on ``data``; the subset's name; the skipped files."""
    has_splits = data.is_dir() and any((data / s).is_dir() for s in ("train", "val", "test"))
    items, classes, refused = find_videos(data, split if has_splits else None)
    held_out = _held_out(r.path) if not has_splits and not all_videos else None
    if held_out is not None:
        wanted = {str(Path(p).resolve()) for p in held_out}
        items = [it for it in items if str(Path(it.path).resolve()) in wanted]
        if not items:
            held_out = None
            items, classes, refused = find_videos(data, None)
    unknown = sorted(set(classes) - set(r.classes))
    if unknown:
        raise DataError(
            f"{data} has classes the model was not trained on: {', '.join(unknown)} (it knows {', '.join(r.classes)})"
        )
    remap = [r.classes.index(c) for c in classes]
    items = [VideoItem(it.path, remap[it.label], it.start, it.end) for it in items]
    ds = VideoDataset(items, r.classes, spec=_spec_for(r, sampling), refused=refused)
    skips = SkipLog()
    skips.add(ds.skipped, warn=False)
    y_true, y_pred = [], []
    for batch in _loader(ds, batch_size, workers):
        skips.add(batch["skipped"])
        if batch["video"] is None:
            continue
        y_pred += _scores(r.model, batch).argmax(-1).tolist()
        y_true += batch["label"].tolist()
    if not y_true:
        raise DataError(f"no video of {data} could be evaluated ({len(skips)} skipped)")
    subset = "held-out validation videos of the run" if held_out is not None else (split if has_splits else "all")
    return y_true, y_pred, subset, skips


def _series_predictions(r: Run, source, split, batch_size: int):
    """True and predicted labels of a series run on ``source``'s test split (or the whole file)."""
    from ..data.series import SeriesDataset, collate_series, load_series

    data = load_series(source, split or "test", r.classes)
    ds = SeriesDataset(data, r.spec.normalizer)
    y_true, y_pred = [], []
    with torch.inference_mode():
        for b in torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=collate_series):
            y_pred += r.model(b["series"], b["lengths"]).argmax(-1).tolist()
            y_true += b["label"].tolist()
    return y_true, y_pred, f"{split or 'test'} split of {source}", SkipLog()


def _held_out(run: Path) -> list[str] | None:
    """The validation videos a run held out of a folder without split folders (from ``run.json``)."""
    path = run / "run.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("held_out")


def predict(
    run: str | Path,
    videos: Sequence[str | Path],
    topk: int = 3,
    sampling: str | None = None,
    precision: str = "32",
) -> list[dict[str, Any]]:
    """Top-k labels with probabilities for each video, sampled as the run was trained.

    Returns:
        One dict per video: ``{"path", "top": [{"label", "prob"}, ...]}``, or ``{"path", "error"}``
        for a file that cannot be decoded.
    """
    r = load_run(run, precision)
    spec = _spec_for(r, sampling)
    k = max(1, min(topk, len(r.classes)))
    results = []
    for v in videos:
        info, reason = _try_probe(str(v))
        if info is None:
            results.append({"path": str(v), "error": reason})
            continue
        ds = VideoDataset([VideoItem(str(v), 0)], r.classes, spec=spec, warn=False, infos=[info])
        batch = collate_clips([ds[0]])
        if batch["video"] is None:
            results.append({"path": str(v), "error": batch["skipped"][0][1]})
            continue
        probs = _scores(r.model, batch)[0]
        top = probs.topk(k)
        results.append(
            {
                "path": str(v),
                "top": [
                    {"label": r.classes[i], "prob": round(float(p), 4)}
                    for p, i in zip(top.values.tolist(), top.indices.tolist())
                ],
            }
        )
    return results
