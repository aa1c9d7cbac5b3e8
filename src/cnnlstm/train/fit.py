"""Train a video classifier into a run folder, through Lightning.

A run folder holds ``config.json`` + ``model.safetensors`` (the best model, loadable with
``CNNLSTM.from_pretrained(run)``), ``labels.json``, ``data.json`` (how clips are made),
``run.json`` (options, results, skipped files), ``checkpoints/best.ckpt`` and ``last.ckpt``
(atomic), ``metrics.csv`` and ``curves.png``.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.datasets import ClipSpec, VideoDataset, collate_clips, stratified_split
from ..data.transforms import ClipTransform
from ..errors import ConfigError, DataError
from ..model import CNNLSTM, _atomic_write
from .module import AtomicCheckpointIO, ClipClassifier, L
from .plots import plot_curves, read_epoch_metrics

__all__ = ["SERIES_EPOCHS", "SERIES_MODEL", "TrainOptions", "fit_series", "fit_videos", "window_loader", "write_json"]

log = logging.getLogger("cnnlstm.train")


@dataclass
class TrainOptions:
    """Options of a training run (everything but the model and the clips)."""

    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    workers: int = 2
    seed: int = 0
    val_fraction: float = 0.2
    augment: bool = False
    flip: bool = False
    devices: Any = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    accelerator: str = "auto"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda p: Path(p).write_text(json.dumps(obj, indent=2) + "\n"))


def _loader(ds: VideoDataset, opts: TrainOptions, shuffle: bool) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        ds,
        batch_size=opts.batch_size,
        shuffle=shuffle,
        num_workers=opts.workers,
        collate_fn=collate_clips,
        worker_init_fn=ds.worker_init if opts.workers else None,
        persistent_workers=opts.workers > 0,
        # workers start from a clean server process: forking a process that already runs decoder, probe and
        # OpenMP threads can deadlock a worker on a lock copied in its held state
        multiprocessing_context="forkserver" if opts.workers > 0 else None,
        generator=torch.Generator().manual_seed(opts.seed),
    )


def window_loader(opts: TrainOptions, series: torch.Tensor, target: torch.Tensor | None = None):
    """Shuffled batches of equal-length windows: ``{"series": (B, T, F)[, "target": (B, ...)], ...}``."""

    def collate(idx: list[int]) -> dict[str, Any]:
        i = torch.tensor(idx)
        batch = {"series": series[i], "lengths": None, "index": i, "skipped": []}
        if target is not None:
            batch["target"] = target[i]
        return batch

    return torch.utils.data.DataLoader(
        range(len(series)),
        batch_size=opts.batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(opts.seed),
    )


def _prepare(out: Path, opts: TrainOptions) -> Path:
    """Check the run folder against --resume/--overwrite; returns the checkpoint to resume from."""
    L.seed_everything(opts.seed, workers=True, verbose=False)
    resume_from = out / "checkpoints" / "last.ckpt"
    if opts.resume and not resume_from.is_file():
        raise ConfigError(f"--resume: {resume_from} does not exist (nothing to resume in {out})")
    if not opts.resume and (out / "checkpoints").exists():
        if not opts.overwrite:
            raise ConfigError(
                f"{out} already holds a run: use --resume to continue it, --overwrite to start "
                "it again, or another --out"
            )
        for sub in ("checkpoints", "logs"):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return resume_from


def _fit(
    model: CNNLSTM,
    train_loader,
    val_loader,
    out: Path,
    opts: TrainOptions,
    resume_from: Path,
    task: str = "classify",
    anomaly_target: dict[str, Any] | None = None,
):
    """Lightning does the training; returns (trainer, checkpoint callback, module with the best weights)."""
    module = ClipClassifier(
        model.config.to_dict(),
        opts.lr,
        opts.weight_decay,
        opts.epochs,
        seen_dir=str(out / "logs" / "seen"),
        task=task,
        anomaly_target=anomaly_target,
    )
    # the lowest validation loss, not the highest accuracy: accuracy saturates (the demo's is 1.000 from
    # epoch 0 on) and ties kept the first epoch's barely trained weights
    monitor = {"monitor": "val_loss", "mode": "min"} if val_loader is not None else {"monitor": None}
    ckpt = L.callbacks.ModelCheckpoint(
        dirpath=out / "checkpoints", filename="best", save_last=True, enable_version_counter=False, **monitor
    )
    logger = L.loggers.CSVLogger(save_dir=str(out), name="logs")  # a new version per resume: nothing overwritten
    trainer = L.Trainer(
        max_epochs=opts.epochs,
        accelerator=opts.accelerator,
        devices=opts.devices,
        strategy=opts.strategy,
        num_nodes=opts.num_nodes,
        precision=opts.precision,
        callbacks=[ckpt],
        logger=logger,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=opts.progress,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        deterministic=False,
    )
    trainer.fit(
        module,
        train_loader,
        val_loader,
        ckpt_path=str(resume_from) if opts.resume else None,
        weights_only=True,
    )
    if trainer.is_global_zero:
        best = ckpt.best_model_path if val_loader is not None and ckpt.best_model_path else ckpt.last_model_path
        state = torch.load(best or resume_from, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    return trainer, ckpt, module


def _finish(out: Path, trainer, ckpt, module, classes: list[str], data_json: dict[str, Any]) -> tuple[Path, Any]:
    """Write the run folder's model, labels, data spec, merged metrics and curves."""
    module.model.save_pretrained(out)
    write_json(out / "labels.json", classes)
    write_json(out / "data.json", data_json)
    metrics = out / "metrics.csv"
    merge_metrics(sorted((out / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:])), metrics)
    curves = plot_curves(metrics, out / "curves.png")
    if not ckpt.monitor or ckpt.best_model_score is None:
        return curves, None
    m = read_epoch_metrics(metrics)  # the validation accuracy of the epoch with the lowest validation loss
    acc = dict(m.get("val_acc", []))
    best = min(m.get("val_loss", []), key=lambda ev: ev[1], default=(None, None))[0]
    return curves, None if best not in acc else round(acc[best], 4)


def _summary(
    out: Path, model: CNNLSTM, opts: TrainOptions, trainer, t0: float, curves: Path, best_val, **specific: Any
) -> dict[str, Any]:
    """The run summary, written to ``run.json``: what was trained on, how, and how it went."""
    summary = {
        **specific,
        "best_val_acc": best_val,
        "epochs": trainer.current_epoch,
        "seconds": round(time.time() - t0, 1),
        "model": model.config.to_dict(),
        "options": {k: v for k, v in asdict(opts).items() if k != "extra"},
        "params": sum(p.numel() for p in model.parameters()),
        "curves": str(curves),
    }
    write_json(out / "run.json", summary)
    return summary


def fit_videos(
    data: str | Path,
    out: str | Path,
    model_options: dict[str, Any] | None = None,
    spec: ClipSpec | None = None,
    options: TrainOptions | None = None,
) -> dict[str, Any]:
    """Train a CNNLSTM classifier on a video folder (or manifest) and write the run folder.

    Args:
        data: ``root/CLASS/*``, ``root/train|val|test/CLASS/*`` or a CSV manifest.
        out: the run folder.
        model_options: keyword arguments of :class:`~cnnlstm.CNNLSTM` (backbone, bridge, hidden_size, ...);
            ``input_shape`` and ``num_classes`` come from ``spec`` and the data.
        spec: how clips are made (:class:`~cnnlstm.data.ClipSpec`); evaluation and prediction reuse it.
        options: :class:`TrainOptions`.

    Returns:
        The run summary (also in ``run.json``): best validation accuracy, epochs, time, skipped files.
    """
    opts = options or TrainOptions()
    spec = spec or ClipSpec()
    out = Path(out)
    resume_from = _prepare(out, opts)

    t0 = time.time()
    full = VideoDataset.from_root(data, split="train", spec=spec, seed=opts.seed)
    has_val = (Path(data) / "val").is_dir()
    if has_val:
        train_ds = full
        val_ds = VideoDataset.from_root(data, split="val", spec=_eval_spec(spec), seed=opts.seed)
        _check_same_classes(full.classes, val_ds.classes)
    else:
        tr, va = stratified_split(full.labels, opts.val_fraction, opts.seed)
        train_ds, val_ds = full.subset(tr), full.subset(va, spec=_eval_spec(spec))
    missing = sorted(set(range(len(full.classes))) - set(train_ds.labels))
    if missing:
        names = ", ".join(full.classes[i] for i in missing)
        raise DataError(f"no readable training video for class(es) {names}: every file of theirs was skipped")
    if opts.augment or opts.flip:
        train_ds.transform = ClipTransform(
            (0.6, 1.0) if opts.augment else None, opts.flip, spec.mean, spec.std, seed=opts.seed
        )
    index_time = time.time() - t0

    model_kw = dict(model_options or {})
    model_kw.update(
        input_shape=(spec.clip_len, spec.channels, *spec.size), layout="NTCHW", num_classes=len(full.classes)
    )
    model = CNNLSTM(**model_kw)
    val_loader = _loader(val_ds, opts, False) if len(val_ds) else None
    trainer, ckpt, module = _fit(model, _loader(train_ds, opts, True), val_loader, out, opts, resume_from)
    if not trainer.is_global_zero:
        return {}
    curves, best_val = _finish(out, trainer, ckpt, module, full.classes, spec.to_dict())
    skipped = dict(full.skipped)
    skipped.update(module.skips.seen)
    return _summary(
        out,
        model,
        opts,
        trainer,
        t0,
        curves,
        best_val,
        data=str(data),
        classes=full.classes,
        train_videos=len(train_ds),
        val_videos=len(val_ds),
        held_out=None if has_val else [it.path for it in val_ds.items],
        index_seconds=round(index_time, 1),
        skipped=[{"path": p, "reason": r} for p, r in skipped.items()],
    )


# Pooling time by 4 before a bidirectional LSTM made small UCR sets stable across seeds (GunPoint, 300 epochs,
# seeds 0/1/2: 0.967/0.973/0.747 -> 0.960/0.987/0.980; ArrowHead mean 0.610 -> 0.760): the RNN reads a quarter
# of the steps. See docs/series-accuracy.md.
SERIES_MODEL: dict[str, Any] = {
    "backbone": "conv1d",
    "backbone_options": {"channels": (64, 64, 64), "kernel_size": 7, "dilated": True, "pool": 4},
    "bridge": "none",
    "hidden_size": 128,
    "bidirectional": True,
    "head": "mean",
}
SERIES_EPOCHS = 300  # the command's default for series when --epochs is not given


def fit_series(
    source: str | Path,
    out: str | Path,
    model_options: dict[str, Any] | None = None,
    options: TrainOptions | None = None,
) -> dict[str, Any]:
    """Train a CNNLSTM classifier on labelled series (``aeon:NAME``, ``.npz``, ``.npy``, ``.csv``).

    The normaliser is fitted on the training series only and saved in ``data.json``. With
    ``options.val_fraction > 0`` a stratified part of the training split validates and picks the best
    epoch; with 0, all of it trains and the last epoch is kept (the UCR habit for tiny training sets).

    Returns:
        The run summary, also in ``run.json``.
    """
    from ..data.series import Normalizer, SeriesDataset, collate_series, load_series

    opts = options or TrainOptions()
    out = Path(out)
    resume_from = _prepare(out, opts)
    t0 = time.time()
    data = load_series(source, "train")
    if opts.val_fraction > 0:
        tr, va = stratified_split(data.y.tolist(), opts.val_fraction, opts.seed)
    else:
        tr, va = list(range(len(data.x))), []
    norm = Normalizer.fit([data.x[i] for i in tr])
    train_ds = SeriesDataset(data.subset(tr), norm)
    val_ds = SeriesDataset(data.subset(va), norm) if va else None

    model_kw = {**SERIES_MODEL, **(model_options or {})}
    model_kw.update(input_shape=(None, data.features), layout="NTF", num_classes=len(data.classes))
    model = CNNLSTM(**model_kw)

    def loader(ds, shuffle):
        return torch.utils.data.DataLoader(
            ds,
            batch_size=opts.batch_size,
            shuffle=shuffle,
            collate_fn=collate_series,
            generator=torch.Generator().manual_seed(opts.seed),
        )

    trainer, ckpt, module = _fit(
        model, loader(train_ds, True), loader(val_ds, False) if val_ds else None, out, opts, resume_from
    )
    if not trainer.is_global_zero:
        return {}
    data_json = {"kind": "series", "source": str(source), "features": data.features, "mean": norm.mean, "std": norm.std}
    curves, best_val = _finish(out, trainer, ckpt, module, data.classes, data_json)
    return _summary(
        out,
        model,
        opts,
        trainer,
        t0,
        curves,
        best_val,
        data=str(source),
        classes=data.classes,
        train_series=len(train_ds),
        val_series=len(val_ds) if val_ds else 0,
        skipped=[],
    )


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

    _atomic_write(path, write)
    return path


def _eval_spec(spec: ClipSpec) -> ClipSpec:
    """Validation samples deterministically: ``random`` training clips validate on ``uniform`` ones."""
    d = spec.to_dict()
    if d["sampling"] == "random":
        d["sampling"] = "uniform"
    return ClipSpec.from_dict(d)


def _check_same_classes(train: list[str], other: list[str]) -> None:
    if train != other:
        raise DataError(f"the val split's classes {other} differ from the train split's {train}")
