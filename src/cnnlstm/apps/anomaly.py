"""Score new videos or a series with an anomaly run: per-clip scores and flags, per-step scores, timelines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import write_json
from ..anomaly import AnomalyStats, auroc, next_step_errors
from ..data.datasets import VideoDataset, VideoItem
from ..data.sequences import labelled_sequence, video_files, whole_video
from ..errors import DataError, require
from ..run import Run, load_run
from .plots import plot_scores

__all__ = ["score_anomaly", "score_lines"]


def score_anomaly(run: str | Path, data: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Score videos (a folder; ``normal/`` and ``anomaly/`` subfolders give labels) or a series.

    Returns:
        Per-clip scores and flags (video), per-step scores (series), the PNG timelines, and with labels
        AUROC and precision/recall at the threshold.
    """
    r = load_run(run)
    if r.kind.task != "anomaly":
        raise DataError(f"{run} is a {r.kind} run, not an anomaly run (train one with cnnlstm anomaly fit)")
    folder = Path(out or Path(run) / "scores")
    folder.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        if r.kind.modality == "video":
            return _score_videos(r, Path(data), folder)
        return _score_series(r, str(data), folder)


def _label(path: Path) -> int | None:
    parts = path.parts
    return 1 if "anomaly" in parts else 0 if "normal" in parts else None


def _score_videos(r: Run, root: Path, folder: Path) -> dict[str, Any]:
    stats: AnomalyStats = r.data.anomaly
    root = root / "test" if (root / "test").is_dir() else root
    files = video_files(root)
    if not files:
        raise DataError(f"{root} holds no video files to score")
    ds = VideoDataset([VideoItem(str(f), 0) for f in files], ["normal"], spec=r.spec)
    rows = []
    for i, item in enumerate(ds.items):
        err = next_step_errors(r.model, whole_video(ds, i)[None], "video", **stats.target)[0].numpy()  # (T,)
        score = stats.clip_score(err)
        rows.append(
            {
                "path": item.path,
                "score": score,
                "flag": score > stats.threshold,
                "label": _label(Path(item.path).relative_to(root)),
                "first_step": stats.horizon,
                "z": stats.standardise(err)[stats.horizon :].tolist(),  # steps first_step, first_step + 1, ...
            }
        )
    labels = [rw["label"] for rw in rows]
    png = plot_scores(
        [rw["z"] for rw in rows], [Path(rw["path"]).name for rw in rows], stats.threshold,
        folder / "timelines.png", labels=labels, start=stats.horizon,
    )  # fmt: skip
    result: dict[str, Any] = {
        "clips": rows,
        "threshold": stats.threshold,
        "png": str(png),
        "skipped": [{"path": p, "reason": s} for p, s in ds.skipped],
    }
    if all(lb is not None for lb in labels):
        result.update(_metrics(np.array(labels), np.array([rw["score"] for rw in rows]), stats.threshold))
    return result


def _score_series(r: Run, source: str, folder: Path) -> dict[str, Any]:
    stats: AnomalyStats = r.data.anomaly
    values, labels = labelled_sequence(source, "test")
    x = torch.from_numpy(r.spec.normalizer(values))[None]  # (1, T, F)
    z = stats.standardise(next_step_errors(r.model, x, "series", **stats.target)[0].numpy())  # (T,)
    w = min(stats.warmup, len(z) - 1)
    z[:w] = np.median(z[w:])  # the first steps have no prediction, or one from too little history: neutral
    png = plot_scores([z], [source], stats.threshold, folder / "timeline.png", series=values[:, 0], truth=labels)
    result = {"steps": len(z), "threshold": stats.threshold, "png": str(png), "max_step": int(z.argmax())}
    if labels is not None and labels.any():
        result.update(_metrics(labels.astype(int), z, stats.threshold))
        result["region_rank"] = _region_rank(z, labels.astype(bool))
    write_json(folder / "series_scores.json", {"z": z.tolist()})
    return result


def _metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC, and precision and recall of the flags ``scores > threshold`` (scikit-learn's)."""
    metrics = require("sklearn.metrics", "train", "anomaly metrics")
    flags = scores > threshold
    return {
        "auroc": auroc(labels, scores),
        "precision": float(metrics.precision_score(labels, flags, zero_division=0)),
        "recall": float(metrics.recall_score(labels, flags, zero_division=0)),
        "flagged": int(flags.sum()),
    }


def _region_rank(z: np.ndarray, truth: np.ndarray, width: int | None = None) -> int:
    """Where the true anomaly region ranks when the series is cut into windows ranked by their max score (1 = top)."""
    idx = np.flatnonzero(truth)
    width = width or max(1, int(idx[-1] - idx[0] + 1) * 4)
    starts = np.arange(0, len(z), width)
    peaks = np.array([z[s : s + width].max() for s in starts])
    region = int(idx[0] // width)
    return int((peaks > peaks[region]).sum() + 1)


def score_lines(result: dict[str, Any]) -> list[str]:
    """What the command prints: a row per clip (score, flag, path) or the series' peak; the metrics; the PNG."""
    clips = result.get("clips", [])
    out = [f"{'score':>8}  {'flag':<7}  path"] if clips else []
    out += [f"{c['score']:8.3f}  {'ANOMALY' if c['flag'] else 'normal':<7}  {c['path']}" for c in clips]
    if "steps" in result:
        out.append(f"{result['steps']} steps scored; highest at step {result['max_step']}")
    if "auroc" in result:
        rank = f"; true region ranks {result['region_rank']}" if "region_rank" in result else ""
        out.append(
            f"AUROC {result['auroc']:.3f}; at the threshold {result['threshold']:.3f}: precision "
            f"{result['precision']:.3f}, recall {result['recall']:.3f}{rank}"
        )
    return [*out, f"timeline: {result['png']}"]
