"""Predict labels of new videos with a trained run, sampling them as the run was trained."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data.batch import collate_clips
from ..data.datasets import VideoDataset, VideoItem, _try_probe
from .evaluate import class_scores

__all__ = ["predict", "prediction_lines"]


def predict(
    run: str | Path,
    videos: Sequence[str | Path],
    topk: int = 3,
    sampling: str | None = None,
    precision: str = "32",
    runtime: str = "torch",
    export: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Top-k labels with probabilities for each video, sampled as the run was trained.

    ``precision``, ``runtime`` and ``export``: as :func:`~cnnlstm.apps.evaluate.evaluate`'s (an exported graph
    in ONNX Runtime or OpenVINO instead of the PyTorch model).

    Returns:
        One dict per video: ``{"path", "top": [{"label", "prob"}, ...]}``, or ``{"path", "error"}``
        for a file that cannot be decoded.
    """
    from ..export.runtime import load_for_runtime

    r = load_for_runtime(run, runtime, precision, export)
    spec = r.spec.for_scoring(sampling)
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
        with r.model.autocast(r.precision):
            top = class_scores(r.model, batch)[0].topk(k)  # (classes,) -> k best
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


def prediction_lines(results: list[dict[str, Any]]) -> list[str]:
    """One line per video: its top labels with probabilities, or why it was skipped."""
    return [
        f"{r['path']}: skipped: {r['error']}"
        if "error" in r
        else f"{r['path']}: " + ", ".join(f"{t['label']} {t['prob']:.3f}" for t in r["top"])
        for r in results
    ]
