"""``cnnlstm anomaly fit|score``: train a next-step predictor on normal videos or series; score new data."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..anomaly import AnomalyStats, auroc, calibrate, next_step_errors, targets
from ..data.datasets import ClipSpec, VideoDataset, VideoItem, collate_clips
from ..data.series import Normalizer, load_sequence
from ..data.transforms import ClipTransform
from ..data.video import VIDEO_EXTENSIONS, read_frames
from ..errors import DataError
from ..model import CNNLSTM
from ..runs import load_run
from .fit import TrainOptions, _finish, _fit, _prepare, _summary, window_loader, write_json

__all__ = ["fit_anomaly", "score_anomaly"]

VIDEO_MODEL = {"backbone_options": {"channels": (16, 32, 64)}, "bridge": "flatten", "hidden_size": 256}
# six frames ahead, as a change of the 6x6-pooled frame: see cnnlstm.anomaly for why not the next frame
VIDEO_TARGET = {"grid": 6, "horizon": 6, "residual": True}
SERIES_TARGET = {"grid": 8, "horizon": 1, "residual": False}
VIDEO_EPOCHS, SERIES_EPOCHS = 60, 15
SERIES_MODEL = {
    "backbone": "conv1d",
    "backbone_options": {"channels": (32, 32), "kernel_size": 5, "causal": True},
    "bridge": "none",
    "hidden_size": 64,
}


def _videos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


def _series_parts(source: str, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Values ``(T, F)`` and per-step labels (or None) of a series source; ``aeon:KDD-TSAD_NNN`` has both splits."""
    if source.startswith("aeon:") and "TSAD" in source:
        import aeon

        folder = Path(aeon.__file__).parent / "datasets" / "data" / source.split(":", 1)[1]
        files = sorted(folder.glob(f"*_{split.upper()}.csv"))
        if not files:
            raise DataError(f"{source}: no {split} part shipped")
        source = str(files[0])
    values, names = load_sequence(source)
    keep = [i for i, n in enumerate(names) if n not in ("timestamp", "is_anomaly", "label")]
    labels = values[:, names.index("is_anomaly")] if "is_anomaly" in names else None
    return values[:, keep], labels


def fit_anomaly(
    data: str | Path,
    out: str | Path,
    options: TrainOptions | None = None,
    window: int = 128,
    false_alarm_rate: float = 0.05,
    size: tuple[int, int] = (48, 48),
    clip_len: int = 16,
) -> dict[str, Any]:
    """Learn normal data: a folder of normal videos (``data/train/normal`` if it exists), or a normal series.

    A fifth of the normal data is held out: the step errors on it set the standardisation and the
    threshold (``false_alarm_rate`` of held-out normal clips above it).
    """
    src = str(data)
    opts = options or TrainOptions(epochs=default_epochs(src), batch_size=16, lr=3e-3)
    out = Path(out)
    resume_from = _prepare(out, opts)
    t0 = time.time()
    rng = np.random.default_rng(opts.seed)
    if Path(src).is_dir():
        kind = "video"
        folder = Path(src) / "train" / "normal" if (Path(src) / "train" / "normal").is_dir() else Path(src)
        files = _videos(folder)
        if not files:
            raise DataError(f"{folder} holds no video files to learn normal motion from")
        order = rng.permutation(len(files))
        cut = max(1, len(files) // 5)
        if clip_len <= VIDEO_TARGET["horizon"]:
            raise DataError(
                f"clip_len {clip_len} leaves nothing to predict {VIDEO_TARGET['horizon']} frames ahead: "
                f"use clips longer than {VIDEO_TARGET['horizon'] + 2} frames"
            )
        # short videos are padded with lengths, not by repeating the last frame (that would teach freezes)
        spec = ClipSpec(clip_len=clip_len, size=size, sampling="random", pad="lengths")
        full = VideoDataset([VideoItem(str(files[i]), 0) for i in order], ["normal"], spec=spec, seed=opts.seed)
        train_ds, held = full.subset(range(cut, len(full))), full.subset(range(cut))
        target = VIDEO_TARGET
        g = target["grid"]
        model = CNNLSTM(**VIDEO_MODEL, input_shape=(None, 3, *size), head="frames", num_classes=3 * g * g)
        loader = torch.utils.data.DataLoader(
            train_ds,
            batch_size=opts.batch_size,
            shuffle=True,
            collate_fn=collate_clips,
            generator=torch.Generator().manual_seed(opts.seed),
        )
        data_json: dict[str, Any] = {"kind": "video-anomaly", **spec.to_dict()}
        held_seqs = [_video_sequence(held, i) for i in range(len(held))]
    else:
        kind = "series"
        target = SERIES_TARGET
        values, _ = _series_parts(src, "train")
        norm = Normalizer.fit([values[: int(len(values) * 0.8)]])
        v = norm(values)
        cut = int(len(v) * 0.8)
        starts = range(0, max(1, cut - window + 1), max(1, window // 4))
        xs = torch.stack([torch.from_numpy(v[s : s + window]) for s in starts])  # (N, window, F)
        model = CNNLSTM(
            **SERIES_MODEL, layout="NTF", input_shape=(None, v.shape[1]), head="frames", num_classes=v.shape[1]
        )
        loader = window_loader(opts, xs)
        held_seqs = [
            torch.from_numpy(v[s : s + window])
            for s in range(cut, max(cut + 1, len(v) - window + 1), max(1, window // 2))
        ]
        data_json = {
            "kind": "series-anomaly",
            "source": src,
            "features": v.shape[1],
            "mean": norm.mean,
            "std": norm.std,
        }
    trainer, ckpt, module = _fit(model, loader, None, out, opts, resume_from, task="anomaly", anomaly_target=target)
    if not trainer.is_global_zero:
        return {}
    model = module.model.eval()
    with torch.inference_mode():
        if kind == "video":  # scores are relative to the size of the change; eps from normal change sizes
            target = {**target, "relative": max(0.1 * _mean_change(held_seqs, target), 1e-6)}
        errs = [next_step_errors(model, s[None], kind, **target)[0].numpy() for s in held_seqs]
    # a prediction needs two seen steps (a direction of motion) before it can be judged
    stats = calibrate(errs, false_alarm_rate, warmup=max(3, target["horizon"] + 2), **target)
    data_json["anomaly"] = stats.to_dict()
    curves, _ = _finish(out, trainer, ckpt, module, ["normal"], data_json)
    return _summary(
        out,
        model,
        opts,
        trainer,
        t0,
        curves,
        None,
        data=src,
        classes=["normal"],
        kind=kind,
        train_series=len(loader.dataset),
        val_series=len(held_seqs),
        skipped=[],
        threshold=stats.threshold,
    )


def default_epochs(data: str | Path) -> int:
    """Training epochs when none are given: ``VIDEO_EPOCHS`` for a folder of videos, ``SERIES_EPOCHS`` for a series."""
    return VIDEO_EPOCHS if Path(data).is_dir() else SERIES_EPOCHS


def _mean_change(seqs: list[torch.Tensor], target: dict[str, Any]) -> float:
    """Mean squared change of the pooled frames over ``horizon`` steps, over normal videos ``(T, C, H, W)``."""
    h, g = target["horizon"], target["grid"]
    pooled = [targets(s[None], "video", g)[0] for s in seqs if len(s) > h]  # (T, D) each
    sizes = [(p[h:] - p[:-h]).pow(2).mean(-1) for p in pooled]
    return float(torch.cat(sizes).mean()) if sizes else 0.0


def _video_sequence(ds: VideoDataset, i: int) -> torch.Tensor:
    """Every frame of video ``i`` at the model's size, normalised: ``(T, C, H, W)``."""
    info = ds.infos[i]
    frames = read_frames(ds.items[i].path, range(info.frames), ds.spec.size, ds.spec.channels, info)
    return ClipTransform(mean=ds.spec.mean, std=ds.spec.std)(frames)


def score_anomaly(run: str | Path, data: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Score videos (a folder; ``normal/`` and ``anomaly/`` subfolders give labels) or a series.

    Returns:
        Per-clip scores and flags (video), per-step scores (series), the PNG timelines, and with labels
        AUROC and precision/recall at the threshold.
    """
    from .plots import plot_scores

    r = load_run(run)
    d = json.loads((Path(run) / "data.json").read_text())
    if not str(d.get("kind", "")).endswith("anomaly"):
        raise DataError(f"{run} is not an anomaly run (train one with cnnlstm anomaly fit)")
    stats = AnomalyStats(**d["anomaly"])
    folder = Path(out or Path(run) / "scores")
    folder.mkdir(parents=True, exist_ok=True)
    model = r.model.eval()
    if d["kind"] == "video-anomaly":
        root = Path(data)
        root = root / "test" if (root / "test").is_dir() else root
        files = _videos(root)
        if not files:
            raise DataError(f"{root} holds no video files to score")
        spec = ClipSpec.from_dict({k: v for k, v in d.items() if k not in ("kind", "anomaly")})
        ds = VideoDataset([VideoItem(str(f), 0) for f in files], ["normal"], spec=spec)
        rows = []
        with torch.inference_mode():
            for i, item in enumerate(ds.items):
                err = next_step_errors(model, _video_sequence(ds, i)[None], "video", **stats.target)[0].numpy()
                z = stats.standardise(err)
                score = stats.clip_score(err)
                label = None
                parts = Path(item.path).relative_to(root).parts
                if "anomaly" in parts:
                    label = 1
                elif "normal" in parts:
                    label = 0
                rows.append(
                    {
                        "path": item.path,
                        "score": score,
                        "flag": score > stats.threshold,
                        "label": label,
                        "first_step": stats.horizon,
                        "z": z[stats.horizon :].tolist(),  # steps first_step, first_step + 1, ...
                    }
                )
        png = plot_scores(
            [rw["z"] for rw in rows],
            [Path(rw["path"]).name for rw in rows],
            stats.threshold,
            folder / "timelines.png",
            labels=[rw["label"] for rw in rows],
            start=stats.horizon,
        )
        result: dict[str, Any] = {
            "clips": rows,
            "threshold": stats.threshold,
            "png": str(png),
            "skipped": [{"path": p, "reason": s} for p, s in ds.skipped],
        }
        labels = [rw["label"] for rw in rows]
        if all(lb is not None for lb in labels):
            result.update(_metrics(np.array(labels), np.array([rw["score"] for rw in rows]), stats.threshold))
        return result
    values, labels = _series_parts(str(data), "test")
    norm = Normalizer(d["mean"], d["std"])
    with torch.inference_mode():
        err = next_step_errors(model, torch.from_numpy(norm(values))[None], "series", **stats.target)[0].numpy()
    z = stats.standardise(err)
    w = min(stats.warmup, len(z) - 1)
    z[:w] = np.median(z[w:])  # the first steps have no prediction, or one from too little history: neutral
    png = plot_scores([z], [str(data)], stats.threshold, folder / "timeline.png", series=values[:, 0], truth=labels)
    result = {"steps": len(z), "threshold": stats.threshold, "png": str(png), "max_step": int(z.argmax())}
    if labels is not None and labels.any():
        result.update(_metrics(labels.astype(int), z, stats.threshold))
        result["region_rank"] = _region_rank(z, labels.astype(bool))
    write_json(folder / "series_scores.json", {"z": z.tolist()})
    return result


def _metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    flags = scores > threshold
    tp = int((flags & (labels == 1)).sum())
    return {
        "auroc": auroc(labels, scores),
        "precision": tp / max(1, int(flags.sum())),
        "recall": tp / max(1, int((labels == 1).sum())),
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
