"""The Lightning module around a :class:`~cnnlstm.CNNLSTM`, atomic checkpoints, and skip counting."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..data.datasets import SkipLog
from ..errors import require
from ..model import CNNLSTM

L = require("lightning.pytorch", "train", "training")
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO  # noqa: E402

__all__ = ["AtomicCheckpointIO", "ClipClassifier"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file in the same folder, then rename it into place.

    A run killed mid-write leaves the previous checkpoint whole and loadable.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path, map_location=None, weights_only=True) -> dict[str, Any]:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


class ClipClassifier(L.LightningModule):
    """Cross-entropy training of a CNNLSTM on batches from :func:`cnnlstm.data.collate_clips`.

    Args:
        model_config: a :class:`~cnnlstm.CNNLSTMConfig` as a dict (JSON-safe, saved in checkpoints).
        lr, weight_decay: AdamW's.
        max_epochs: for the cosine learning-rate schedule.
        seen_dir: where each rank writes the data indices it trained on in its first epoch.
        task: ``classify``, ``forecast`` or ``anomaly``.
        anomaly_target: for ``anomaly``, :func:`cnnlstm.anomaly.next_step_errors`' target options.
    """

    def __init__(
        self,
        model_config: dict[str, Any],
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        max_epochs: int = 10,
        seen_dir: str | None = None,
        task: str = "classify",
        anomaly_target: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = CNNLSTM.from_config(model_config)
        self.skips = SkipLog()
        self._seen: list[int] = []

    def forward(self, video: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(video, lengths)

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor | None:
        self.skips.add(batch["skipped"])
        x = batch["video"] if "video" in batch else batch["series"]  # (N, T, C, H, W) | (N, T, F)
        if x is None:
            return None
        n = len(x)
        if self.hparams.task in ("anomaly", "forecast"):
            if self.hparams.task == "anomaly":  # learn the next step of normal data
                from ..anomaly import next_step_errors

                kind = "video" if "video" in batch else "series"
                target = self.hparams.anomaly_target or {}
                err = next_step_errors(self.model, x, kind, lengths=batch["lengths"], **target)  # (N, T)
                lengths, h = batch["lengths"], target.get("horizon", 1)
                steps = (err.shape[1] - h) * len(x) if lengths is None else int((lengths - h).clamp(min=0).sum())
                loss = err.sum() / max(1, steps)
            else:
                loss = F.mse_loss(self(x), batch["target"])  # (N, horizon, targets)
            self.log(
                f"{stage}_loss",
                loss,
                prog_bar=True,
                on_step=stage == "train",
                on_epoch=True,
                batch_size=n,
                sync_dist=True,
            )
            return loss
        logits = self(x, batch["lengths"])  # (N, classes)
        loss = F.cross_entropy(logits, batch["label"])
        acc = (logits.argmax(-1) == batch["label"]).float().mean()
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, prog_bar=True, on_step=on_step, on_epoch=True, batch_size=n, sync_dist=True)
        self.log(f"{stage}_acc", acc, prog_bar=True, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
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
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.hparams.max_epochs))
        return {"optimizer": opt, "lr_scheduler": sched}
