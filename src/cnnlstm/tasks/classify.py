"""Classification: a label per video clip or per series, trained by cross-entropy into a run folder."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..build import preset
from ..data.batch import series_loader, video_loader
from ..data.datasets import ClipSpec, VideoDataset, class_names, stratified_split
from ..data.transforms import ClipTransform
from ..errors import DataError, require
from ..model import CNNLSTM
from ..run import DataSpec, Kind, SeriesSpec, TrainSummary
from ._lightning import TaskModule, start_run, train_run
from .ensemble import fit_ensemble
from .options import VIDEO_TRAINING, TrainOptions

__all__ = [
    "MIN_PER_CLASS",
    "SERIES_BUDGET",
    "SERIES_EPOCHS",
    "SERIES_TRAINING",
    "ClassifyModule",
    "check_trainable",
    "fit_series",
    "fit_videos",
]

MIN_PER_CLASS = 2  # readable training videos a class needs: one to learn from, one to validate on

SERIES_EPOCHS = 300
# small UCR-style training sets: many passes, all of the training split trains, the lowest training loss is kept
SERIES_BUDGET = "10m"
# ... within a 10-minute budget: where 300 epochs would take longer, the cosine is fitted to the epochs that fit
SERIES_TRAINING = {"epochs": SERIES_EPOCHS, "val_fraction": 0.0, "max_time": SERIES_BUDGET}


class ClassifyModule(TaskModule):
    """Cross-entropy on ``batch["label"]``; accuracy (torchmetrics) logged per epoch as ``train_acc``/``val_acc``."""

    def __init__(self, model_config: dict[str, Any], *args: Any, **kwargs: Any):
        super().__init__(model_config, *args, **kwargs)
        metrics = require("torchmetrics.classification", "train", "training metrics")
        n = self.model.config.num_classes
        self.train_acc = metrics.MulticlassAccuracy(n, average="micro")
        self.val_acc = metrics.MulticlassAccuracy(n, average="micro")

    def loss(self, x: torch.Tensor, batch: dict[str, Any], stage: str) -> torch.Tensor:
        logits = self(x, batch["lengths"])  # (N, classes)
        acc = self.train_acc if stage == "train" else self.val_acc
        acc(logits, batch["label"])
        self.log(f"{stage}_acc", acc, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(x))
        return F.cross_entropy(logits, batch["label"])


def _module(model: CNNLSTM, opts: TrainOptions, folder) -> ClassifyModule:
    seen = str(folder.logs / "seen")
    return ClassifyModule(
        model.config.to_dict(), opts.lr, opts.weight_decay, opts.epochs, seen_dir=seen, schedule=opts.schedule
    )


def _video_split(data: str | Path, spec: ClipSpec, opts: TrainOptions) -> tuple[VideoDataset, VideoDataset, bool]:
    """The training and validation sets, the data refused first if it cannot train; whether a val split was
    given."""
    full = VideoDataset.from_root(data, split="train", spec=spec, seed=opts.seed)
    check_trainable(full, data)
    if (Path(data) / "val").is_dir():
        val = VideoDataset.from_root(data, split="val", spec=spec.for_scoring(), seed=opts.seed)
        if full.classes != val.classes:
            raise DataError(f"the val split's classes {val.classes} differ from the train split's {full.classes}")
        return full, val, True
    tr, va = stratified_split(full.labels, opts.val_fraction, opts.seed)
    return full.subset(tr), full.subset(va, spec=spec.for_scoring()), False


def check_trainable(ds: VideoDataset, data: str | Path) -> None:
    """Refuse, before any training, data a classifier cannot learn from: fewer than 2 classes, a class with fewer
    than ``MIN_PER_CLASS`` readable videos, or a ``test/`` split with a class that the training data lacks."""
    if len(ds.classes) < 2:
        raise DataError(
            f"{data} holds one class ({', '.join(ds.classes)}): a classifier needs at least 2, one folder each"
        )
    counts = Counter(ds.labels)
    few = [f"{c} has {counts.get(i, 0)}" for i, c in enumerate(ds.classes) if counts.get(i, 0) < MIN_PER_CLASS]
    if few:
        raise DataError(
            f"every class needs at least {MIN_PER_CLASS} readable training videos (one to learn from, one to "
            f"validate on): {'; '.join(few)}. Add videos, or remove the class folder"
        )
    test = Path(data) / "test"
    if test.is_dir():
        unknown = sorted(set(class_names(test, allow_empty_root=True)) - set(ds.classes))
        if unknown:
            raise DataError(
                f"{test} has class(es) that the training data lacks: {', '.join(unknown)}. The model could never "
                "predict them: add training videos for them, or take them out of test/"
            )


def fit_videos(
    data: str | Path,
    out: str | Path,
    model_options: dict[str, Any] | None = None,
    spec: ClipSpec | None = None,
    options: TrainOptions | None = None,
) -> TrainSummary | None:
    """Train a CNNLSTM classifier on a video folder (or manifest) and write the run folder.

    Args:
        data: ``root/CLASS/*``, ``root/train|val|test/CLASS/*`` or a CSV manifest.
        out: the run folder.
        model_options: keyword arguments of :class:`~cnnlstm.CNNLSTM` (backbone, bridge, hidden_size, ...);
            ``input_shape`` and ``num_classes`` come from ``spec`` and the data.
        spec: how clips ``(T, C, H, W)`` are made; evaluation and prediction reuse it.
        options: :class:`TrainOptions` (default: ``VIDEO_TRAINING``).

    Returns:
        The run summary (also in ``run.json``), or None on a non-zero rank of a distributed run.
    """
    opts = options or TrainOptions(**VIDEO_TRAINING)
    spec = spec or ClipSpec()
    if opts.ensemble > 1:
        return fit_ensemble(lambda folder, one: fit_videos(data, folder, model_options, spec, one), out, opts)
    folder, resume_from = start_run(out, opts)
    t0 = time.time()
    train_ds, val_ds, has_val = _video_split(data, spec, opts)
    classes = train_ds.classes
    if opts.augment or opts.flip:
        crop, color = ((0.6, 1.0), 0.2) if opts.augment else (None, None)
        train_ds.transform = ClipTransform(crop, opts.flip, color, spec.mean, spec.std, seed=opts.seed)
        train_ds.jitter = opts.augment
    index_time = time.time() - t0
    shape = (spec.clip_len, spec.channels, *spec.size)
    model = CNNLSTM(**{**(model_options or {}), "input_shape": shape, "layout": "NTCHW", "num_classes": len(classes)})
    loaders = (
        video_loader(train_ds, opts.batch_size, opts.workers, shuffle=True, seed=opts.seed),
        video_loader(val_ds, opts.batch_size, opts.workers, seed=opts.seed) if len(val_ds) else None,
    )
    module = _module(model, opts, folder)
    summary = train_run(
        folder, module, loaders, opts, resume_from, DataSpec(Kind.VIDEO_CLASSIFY, spec), classes, t0=t0,
        data=str(data), train_items=len(train_ds), val_items=len(val_ds),
        held_out=None if has_val else [it.path for it in val_ds.items], index_seconds=round(index_time, 1),
    )  # fmt: skip
    if summary is not None:
        skipped = {**dict(train_ds.skipped), **dict(val_ds.skipped), **module.skips.seen}
        summary.skipped = [{"path": p, "reason": r} for p, r in skipped.items()]
        folder.write_summary(summary)
    return summary


def fit_series(
    source: str | Path,
    out: str | Path,
    model_options: dict[str, Any] | None = None,
    options: TrainOptions | None = None,
) -> TrainSummary | None:
    """Train a CNNLSTM classifier on labelled series (``aeon:NAME``, ``.npz``, ``.npy``, ``.csv``).

    The model starts from the ``series`` preset (:mod:`cnnlstm.build`); ``model_options`` replace its keys.
    ``options`` default to ``SERIES_TRAINING``.
    The normaliser is fitted on the training series only and saved in ``data.json``. With
    ``options.val_fraction > 0`` a stratified part of the training split validates and picks the best
    epoch; with 0, all of it trains and the epoch of the lowest training loss is kept (the UCR habit for tiny
    training sets).

    Returns:
        The run summary, also in ``run.json``.
    """
    from ..data.series import Normalizer, SeriesDataset, load_series

    opts = options or TrainOptions(**SERIES_TRAINING)
    if opts.ensemble > 1:
        return fit_ensemble(lambda folder, one: fit_series(source, folder, model_options, one), out, opts)
    folder, resume_from = start_run(out, opts)
    t0 = time.time()
    data = load_series(source, "train")
    if opts.val_fraction > 0:
        tr, va = stratified_split(data.y.tolist(), opts.val_fraction, opts.seed)
    else:
        tr, va = list(range(len(data.x))), []
    norm = Normalizer.fit([data.x[i] for i in tr])
    train_ds = SeriesDataset(data.subset(tr), norm)
    val_ds = SeriesDataset(data.subset(va), norm) if va else None
    kw = preset("series", **(model_options or {}))
    # a dimension-shuffled RNN arm (LSTM-FCN) reads T as its features: the model takes the longest training series'
    # T, and shorter series are padded to it (with their lengths)
    shuffled = kw.get("arrangement") == "parallel" and kw.get("arrangement_options", {}).get("dimension_shuffle")
    steps = int(max(data.lengths)) if shuffled else None
    model = CNNLSTM(**{**kw, "input_shape": (steps, data.features), "layout": "NTF", "num_classes": len(data.classes)})
    loaders = (
        series_loader(train_ds, opts.batch_size, shuffle=True, seed=opts.seed, pad_to=steps),
        series_loader(val_ds, opts.batch_size, seed=opts.seed, pad_to=steps) if val_ds else None,
    )
    spec = DataSpec(Kind.SERIES_CLASSIFY, SeriesSpec(str(source), data.features, norm.mean, norm.std))
    return train_run(
        folder, _module(model, opts, folder), loaders, opts, resume_from, spec, data.classes, t0=t0,
        data=str(source), train_items=len(train_ds), val_items=len(val_ds) if val_ds else 0,
    )  # fmt: skip
