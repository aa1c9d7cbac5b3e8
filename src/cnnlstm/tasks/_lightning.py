"""What every task shares: the Lightning module's skeleton, atomic checkpoints, and one training run into a folder.

A task module (classification, forecasting, anomaly) says only how a batch becomes a loss; this base
logs it, counts skipped files, records the data its rank saw, and sets up AdamW with a cosine schedule.
:func:`train_run` fits a task module through Lightning and writes the run folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._fast.threads import torch_threads, training_threads
from .._io import atomic_write
from ..data.batch import SkipLog, batch_input
from ..errors import ConfigError, Interrupted, require
from ..model import CNNLSTM
from ..run import DataSpec, RunFolder, TrainSummary
from .budget import CosineBudget
from .options import PLATEAU, TrainOptions, lightning_precision, parse_duration

L = require("lightning.pytorch", "train", "training")
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO  # noqa: E402
from lightning.pytorch.trainer.states import TrainerStatus  # noqa: E402

__all__ = [
    "AtomicCheckpointIO",
    "EpochLines",
    "Fitted",
    "TaskModule",
    "fit_module",
    "lightning_voice",
    "start_run",
    "train_run",
    "write_run",
]

log = logging.getLogger("cnnlstm")

# what Lightning says on every run that a user of cnnlstm cannot act on: the accelerators it found, an ad for its
# cloud logger, a deprecation inside Lightning itself, advice about DataLoader workers (cnnlstm chooses them) and
# the validation loop skipped where a run trains on all its data by design
_LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
_LIGHTNING_WARNINGS = (
    r".*LeafSpec.*",
    r".*does not have many workers.*",
    r".*have no `val_dataloader`.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
)


@contextlib.contextmanager
def lightning_voice(verbose: bool = False) -> Iterator[None]:
    """Lightning's own info lines and routine warnings, silenced for the ``with`` block unless ``verbose``.

    Errors and warnings that point at a problem (anything not in the routine list) still come through.
    """
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        if not verbose:
            for pattern in _LIGHTNING_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
        for lg in loggers:  # verbose: what Lightning would say on its own, whatever the command's logging set up
            lg.setLevel(logging.INFO if verbose else logging.WARNING)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


class EpochLines(L.Callback):
    """One log line per epoch (the epoch, its losses and accuracies, its seconds): the progress shown where a
    progress bar cannot redraw itself (output to a file or a pipe)."""

    def __init__(self, epochs: int):
        self.epochs, self._t0 = epochs, time.time()

    def on_train_epoch_start(self, trainer, module) -> None:
        self._t0 = time.time()

    def on_train_epoch_end(self, trainer, module) -> None:  # after the epoch's validation
        if not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        names = ("train_loss_epoch", "train_acc", "val_loss", "val_acc")
        shown = ", ".join(f"{n.removesuffix('_epoch')} {float(m[n]):.3f}" for n in names if n in m)
        log.info("epoch %d/%d: %s (%.1f s)", trainer.current_epoch + 1, self.epochs, shown, time.time() - self._t0)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint through a temporary file in the same folder, renamed into place (a run killed
    mid-write leaves the previous checkpoint whole); load with ``weights_only=True`` (no code runs)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path, map_location=None, weights_only=True) -> dict[str, Any]:
        """The checkpoint's tensors and numbers; a file that would run code or is damaged is one ConfigError."""
        try:
            return torch.load(path, map_location=map_location or "cpu", weights_only=True)
        except Exception as e:  # pickle's, zipfile's and torch's own errors, whatever the damage
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"{path} cannot be loaded as a weights-only checkpoint (it holds code, or it is damaged: {reason}); "
                "start the run again with --overwrite, or restore the file"
            ) from None


class TaskModule(L.LightningModule):
    """A :class:`~cnnlstm.CNNLSTM` trained by AdamW on a cosine schedule; subclasses give :meth:`loss`.

    Args:
        model_config: a :class:`~cnnlstm.CNNLSTMConfig` as a dict (JSON-safe, saved in checkpoints).
        lr, weight_decay: AdamW's.
        max_epochs: for the cosine learning-rate schedule.
        seen_dir: where each rank writes the data indices it trained on in its first epoch.
        schedule: the learning rate over training (:data:`~cnnlstm.tasks.options.SCHEDULES`).
    """

    def __init__(
        self,
        model_config: dict[str, Any],
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        max_epochs: int = 10,
        seen_dir: str | None = None,
        schedule: str = "cosine",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = CNNLSTM.from_config(model_config)
        self.skips = SkipLog()
        self._seen: list[int] = []

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x, lengths)

    def loss(self, x: torch.Tensor, batch: dict[str, Any], stage: str) -> torch.Tensor:
        """The batch's loss; ``x`` is its input ``(N, T, ...)``, ``stage`` ``"train"`` or ``"val"``."""
        raise NotImplementedError

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor | None:
        self.skips.add(batch["skipped"])
        x = batch_input(batch)
        if x is None:  # every sample of the batch failed to load
            return None
        loss = self.loss(x, batch, stage)
        self.log(
            f"{stage}_loss", loss, prog_bar=True, on_step=stage == "train", on_epoch=True, batch_size=len(x),
            sync_dist=True,
        )  # fmt: skip
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if self.current_epoch == 0 and batch["index"] is not None:
            self._seen += batch["index"].tolist()
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_train_epoch_end(self) -> None:
        if self.current_epoch == 0 and self.hparams.seen_dir:
            d = Path(self.hparams.seen_dir)
            d.mkdir(parents=True, exist_ok=True)
            (d / f"rank{self.global_rank}.json").write_text(json.dumps(sorted(self._seen)))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        schedule = self.hparams.get("schedule", "cosine")  # checkpoints from before the option: cosine
        if schedule == "constant":
            return opt
        if schedule == "plateau":  # per epoch, on the training loss (the model is kept by it too without validation)
            lowest = min(PLATEAU["min_lr"], self.hparams.lr)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=PLATEAU["factor"], patience=PLATEAU["patience"], min_lr=lowest
            )
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "train_loss_epoch"}}
        if schedule == "cosine":  # per epoch, over the epochs asked for
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.hparams.max_epochs))
            return {"optimizer": opt, "lr_scheduler": sched}
        total = max(2, int(self.trainer.estimated_stepping_batches))  # optimizer steps over all the epochs
        if schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr, total_steps=total)
        else:  # warmup-cosine: linear from a tenth over the first 5% of steps (at least 10), then cosine to zero
            warm = min(max(10, total // 20), total - 1)
            sched = torch.optim.lr_scheduler.SequentialLR(
                opt,
                [
                    torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=warm),
                    torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warm),
                ],
                milestones=[warm],
            )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def start_run(out: str | Path, opts: TrainOptions) -> tuple[RunFolder, Path | None]:
    """Seed everything, check the run folder against ``resume``/``overwrite``; the folder and the checkpoint to
    resume from."""
    L.seed_everything(opts.seed, workers=True, verbose=False)
    folder = RunFolder(out)
    return folder, folder.prepare(opts.resume, opts.overwrite)


@dataclass
class Fitted:
    """How a fit went: epochs trained, whether the kept epoch was chosen on validation, and why it stopped
    (``interrupted``: by Ctrl-C or SIGTERM)."""

    epochs: int
    validated: bool
    stopped: str
    interrupted: bool = False


def _trainer(folder: RunFolder, opts: TrainOptions, validates: bool):
    # the lowest validation loss, not the highest accuracy: accuracy saturates, and ties keep the first epoch;
    # without validation the lowest training loss (the series field's habit; never anything measured on test data)
    monitor = {"monitor": "val_loss" if validates else "train_loss_epoch", "mode": "min"}
    ckpt = L.callbacks.ModelCheckpoint(
        dirpath=folder.checkpoints, filename="best", save_last=True, enable_version_counter=False, **monitor
    )
    callbacks: list[Any] = [ckpt]
    if opts.patience and validates:
        callbacks.append(L.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=opts.patience))
    if opts.max_time and opts.schedule == "cosine":
        callbacks.append(CosineBudget())
    bar = opts.progress and sys.stderr.isatty()  # a bar that redraws itself only on a terminal
    if opts.progress and not bar:
        callbacks.append(EpochLines(opts.epochs))
    logger = L.loggers.CSVLogger(save_dir=str(folder.path), name="logs")  # a version per resume: nothing overwritten
    trainer = L.Trainer(
        max_epochs=opts.epochs,
        min_epochs=min(opts.min_epochs, opts.epochs) if opts.min_epochs else None,
        accelerator=opts.accelerator,
        devices=opts.devices,
        strategy=opts.strategy,
        num_nodes=opts.num_nodes,
        precision=lightning_precision(opts.precision),
        callbacks=callbacks,
        max_time=parse_duration(opts.max_time) if opts.max_time else None,
        logger=logger,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=bar,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        deterministic=False,
    )
    return trainer, ckpt


def _stop_reason(trainer, opts: TrainOptions) -> str:
    """Why training ended: the validation loss stopped improving, the time budget ran out, or the epochs ran."""
    early = next((c for c in trainer.callbacks if isinstance(c, L.callbacks.EarlyStopping)), None)
    if early is not None and early.stopped_epoch > 0:
        return f"the validation loss did not improve for {opts.patience} epochs"
    budget = next((c for c in trainer.callbacks if isinstance(c, CosineBudget)), None)
    if budget is not None and (why := budget.reason(opts.max_time, opts.epochs)):
        return why
    timer = next((c for c in trainer.callbacks if isinstance(c, L.callbacks.Timer)), None)
    if opts.max_time and timer is not None and timer.time_remaining() is not None and timer.time_remaining() <= 0:
        return f"the time budget ({opts.max_time}) ran out"
    return f"the {opts.epochs} epoch{'s' if opts.epochs != 1 else ''} ran"


def _example(model: CNNLSTM, loader: Any) -> torch.Tensor | None:
    """A batch of the model's input at the loader's batch size, to size a training step: zeros where the model's
    input shape is fixed, else the loader's first item repeated; None where items are decoded by workers."""
    shape = tuple(model.config.input_shape or ())
    size = getattr(loader, "batch_size", None) or 1
    if shape and None not in shape:
        return torch.zeros(size, *shape)
    if getattr(loader, "num_workers", 0) or not hasattr(loader, "dataset") or not len(loader.dataset):
        return None
    return batch_input(loader.collate_fn([loader.dataset[0]] * size))


def fit_module(
    folder: RunFolder, module: TaskModule, loaders: tuple[Any, Any], opts: TrainOptions, resume_from: Path | None
) -> Fitted | None:
    """Fit ``module`` on ``loaders`` (train, val or None) through Lightning and load the kept weights into it:
    the epoch with the lowest validation loss, or the lowest training loss without validation.

    Returns:
        How it went (:class:`Fitted`), or None on a non-zero rank.
    """
    train_loader, val_loader = loaders
    resume = str(resume_from) if resume_from else None
    interrupted = False
    threads = training_threads(opts.threads, module.model, _example(module.model, train_loader))
    with lightning_voice(opts.verbose), torch_threads(threads):
        trainer, ckpt = _trainer(folder, opts, val_loader is not None)
        try:
            trainer.fit(module, train_loader, val_loader, ckpt_path=resume, weights_only=True)
        except (SystemExit, Exception):  # Ctrl-C ends in Lightning's sys.exit(1), SIGTERM in its own exception
            if trainer.state.status != TrainerStatus.INTERRUPTED:
                raise
            interrupted = True
            signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores a second Ctrl-C; undo it
    if not trainer.is_global_zero:
        return None
    best = ckpt.best_model_path or ckpt.last_model_path
    if interrupted and not (best or resume_from):
        raise Interrupted(f"interrupted before the first epoch ended: nothing to keep in {folder.path}; start again")
    module.load_state_dict(AtomicCheckpointIO().load_checkpoint(best or resume_from)["state_dict"])
    validated = val_loader is not None and ckpt.best_model_score is not None
    if interrupted:
        return Fitted(trainer.current_epoch, validated, "it was interrupted", interrupted=True)
    return Fitted(trainer.current_epoch, validated, _stop_reason(trainer, opts))


def write_run(
    folder: RunFolder,
    model: CNNLSTM,
    opts: TrainOptions,
    fitted: Fitted,
    spec: DataSpec,
    classes: list[str],
    t0: float,
    **summary: Any,
) -> TrainSummary:
    """Write the trained model, its data ``spec``, curves and summary into the run folder.

    ``summary`` holds the :class:`~cnnlstm.run.TrainSummary` fields the task knows (data, item counts, ...).
    """
    folder.write_model(model, classes, spec)
    curves, best_val = folder.write_curves(spec.kind)
    return folder.write_summary(
        TrainSummary(
            kind=spec.kind,
            classes=list(classes),
            best_val_acc=best_val if fitted.validated else None,
            epochs=fitted.epochs,
            stopped=fitted.stopped,
            seconds=round(time.time() - t0, 1),
            model=model.config.to_dict(),
            options=opts.to_dict(),
            params=sum(p.numel() for p in model.parameters()),
            curves=str(curves),
            **summary,
        )
    )


def train_run(
    folder: RunFolder,
    module: TaskModule,
    loaders: tuple[Any, Any],
    opts: TrainOptions,
    resume_from: Path | None,
    spec: DataSpec,
    classes: list[str],
    t0: float,
    **summary: Any,
) -> TrainSummary | None:
    """:func:`fit_module`, then :func:`write_run`; None on a non-zero rank of a distributed run."""
    fitted = fit_module(folder, module, loaders, opts, resume_from)
    if fitted is None:
        return None
    written = write_run(folder, module.model, opts, fitted, spec, classes, t0, **summary)
    if fitted.interrupted:
        raise Interrupted(
            f"interrupted after {fitted.epochs} epoch{'s' if fitted.epochs != 1 else ''}: the best model so far is "
            f"in {folder.path}; continue with the same command and --resume",
            written,
        )
    return written
