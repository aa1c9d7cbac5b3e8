"""Predict labels of new videos with a trained run, sampling them as the run was trained; or of new series with a
series run, normalised as it was trained."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

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

    For a series run, ``videos`` are series sources (``.npz``, ``.npy``, ``.csv``, ``aeon:NAME``'s test split; see
    :func:`~cnnlstm.data.series_inputs.unlabelled_series`), each holding one or more series, each predicted.

    Returns:
        One dict per video (per series): ``{"path", "top": [{"label", "prob"}, ...]}``, or ``{"path", "error"}``
        for a file that cannot be decoded (a series that cannot be read).
    """
    from ..export.runtime import load_for_runtime

    r = load_for_runtime(run, runtime, precision, export)
    k = max(1, min(topk, len(r.classes)))
    if r.kind.modality == "series":
        return [row for source in videos for row in _predict_series(r, source, k)]
    spec = r.spec.for_scoring(sampling)
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
        results.append({"path": str(v), "top": _top(r.classes, top)})
    return results


def _top(classes: list[str], top: Any) -> list[dict[str, Any]]:
    pairs = zip(top.values.tolist(), top.indices.tolist())
    return [{"label": classes[i], "prob": round(float(p), 4)} for p, i in pairs]


def _predict_series(r: Any, source: str | Path, k: int) -> list[dict[str, Any]]:
    """Top-k of each series in ``source``; one error row where the source cannot be read or a series does not fit
    the model (its features, or more steps than a fixed-length model takes)."""
    from ..data.batch import series_loader
    from ..data.series import SeriesDataset, SeriesSet
    from ..data.series_inputs import unlabelled_series
    from ..errors import DataError

    try:
        xs, names = unlabelled_series(source)
    except DataError as e:
        return [{"path": str(source), "error": str(e)}]
    fixed, out, ok = getattr(r.model, "fixed_steps", None), [], []
    for x, name in zip(xs, names):
        if x.shape[1] != r.spec.features:
            out.append({"path": name, "error": f"{x.shape[1]} features, the run trained on {r.spec.features}"})
        elif fixed is not None and len(x) > fixed:
            out.append({"path": name, "error": f"{len(x)} steps: the model takes at most {fixed} (its longest "
                        "training series; its RNN reads the series dimension-shuffled); crop it"})  # fmt: skip
        else:
            out.append({"path": name})
            ok.append(x)
    if not ok:
        return out
    # normalised, padded (to a fixed-length model's T) and batched as evaluate does
    ds = SeriesDataset(SeriesSet(ok, np.zeros(len(ok), dtype=np.int64), r.classes, str(source)), r.spec.normalizer)
    probs = []
    with torch.inference_mode(), r.model.autocast(r.precision):
        for b in series_loader(ds, 64, pad_to=fixed):
            probs += list(r.model(b["series"], b["lengths"]).float().softmax(-1))  # (N, T, F) -> (N, classes)
    rows = iter(row for row in out if "error" not in row)
    for row, p in zip(rows, probs):
        row["top"] = _top(r.classes, p.topk(k))
    return out


def prediction_lines(results: list[dict[str, Any]]) -> list[str]:
    """One line per video: its top labels with probabilities, or why it was skipped."""
    return [
        f"{r['path']}: skipped: {r['error']}"
        if "error" in r
        else f"{r['path']}: " + ", ".join(f"{t['label']} {t['prob']:.3f}" for t in r["top"])
        for r in results
    ]
