"""Options of a training run, everything but the model and the data; no Lightning needed to read them."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from ..errors import ConfigError

__all__ = [
    "LOWEST",
    "PLATEAU",
    "PRECISIONS",
    "SCHEDULES",
    "VIDEO_TRAINING",
    "TrainOptions",
    "lightning_precision",
    "parse_duration",
]

# the learning rate over a run: cosine per epoch; a linear warm-up then cosine per step; one-cycle; constant;
# halved whenever the epoch's training loss has not improved for PLATEAU_PATIENCE epochs (the series field's recipe)
SCHEDULES = ("cosine", "warmup-cosine", "onecycle", "constant", "plateau")
# the recipe of Wang et al. 2017's FCN and ResNet (hfawaz/dl-4-tsc): factor 0.5, patience 50, down to 1e-4
PLATEAU = {"factor": 0.5, "patience": 50, "min_lr": 1e-4}

# videos: up to 30 epochs, stopped once the validation loss has not improved for 6 (never before the 10th), a
# warm-up then cosine learning rate, and augmentation that keeps a clip's motion (bench/video_suite.py chose these
# by the suite's mean and worst task)
VIDEO_TRAINING = {"epochs": 30, "patience": 6, "min_epochs": 10, "augment": True, "schedule": "warmup-cosine"}

# one vocabulary for every command: training autocasts as Lightning's mixed precision, inference as autocast
PRECISIONS = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}


def parse_duration(text: str) -> timedelta:
    """``"90s"``, ``"15m"``, ``"1h30m"``, ``"2h"`` or Lightning's ``"DD:HH:MM:SS"`` / ``"HH:MM:SS"`` as a time span."""
    t = str(text).strip().lower()
    if re.fullmatch(r"\d+(:\d{1,2}){1,3}", t):
        parts = [int(p) for p in t.split(":")]
        parts = [0] * (4 - len(parts)) + parts  # days, hours, minutes, seconds
        span = timedelta(days=parts[0], hours=parts[1], minutes=parts[2], seconds=parts[3])
    else:
        m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?", t)
        if not t or m is None:
            raise ConfigError(f"max_time {text!r}: give a time such as 90s, 15m, 1h30m or 00:15:00 (HH:MM:SS)")
        h, mi, se = (float(g) if g else 0.0 for g in m.groups())
        span = timedelta(hours=h, minutes=mi, seconds=se)
    if span <= timedelta(0):
        raise ConfigError(f"max_time {text!r} must be a positive time")
    return span


def lightning_precision(precision: str) -> str:
    """Lightning's name for ``precision`` (``32``, ``bf16`` or ``16``; Lightning's own names pass through)."""
    p = str(precision)
    if p in PRECISIONS.values():
        return p
    if p not in PRECISIONS:
        raise ConfigError(f"unknown precision {p!r}: expected one of {', '.join(PRECISIONS)}")
    return PRECISIONS[p]


# the least each whole-number option may be: checked by TrainOptions, and by the command line as it parses
LOWEST = {"epochs": 1, "batch_size": 1, "num_nodes": 1, "workers": 0, "threads": 0, "ensemble": 1, "patience": 0,
          "min_epochs": 1}  # fmt: skip


@dataclass
class TrainOptions:
    """How a run trains (the help of ``cnnlstm train``'s options comes from these lines).

    Attributes:
        epochs: passes over the training data (the most, where early stopping is on).
        batch_size: clips or series per step.
        lr: AdamW's learning rate.
        weight_decay: AdamW's weight decay.
        workers: DataLoader processes decoding video.
        seed: seeds the split, the shuffling, the weights and the augmentation.
        val_fraction: share held out for validation when there is no val split (0: all trains, and the epoch of
            the lowest training loss is kept).
        schedule: the learning rate over the epochs: cosine | warmup-cosine | onecycle | constant | plateau (halved
            when the training loss has not improved for 50 epochs, down to 1e-4).
        augment: random resized crops and colour jitter, the same for all frames of a clip, and jittered frame
            indices (the clip's frames stay evenly spaced).
        flip: random horizontal flips (changes left/right motion!).
        devices: Lightning: a count, a list, or auto.
        strategy: Lightning: ddp, ddp_spawn, auto, ...
        num_nodes: Lightning: machines.
        precision: 32 | bf16 | 16: float32, or bfloat16/float16 mixed precision (autocast).
        accelerator: Lightning: cpu | gpu | auto.
        resume: continue the run in the folder from its checkpoints/last.ckpt.
        overwrite: start again in a folder that already holds a run.
        progress: show progress: Lightning's bar on a terminal, one line per epoch elsewhere.
        verbose: show Lightning's own messages and routine warnings.
        max_time: a time budget for training, e.g. 15m, 1h30m or 00:15:00; the kept model is the best so far.
        patience: stop once the validation loss has not improved for this many epochs (0: never).
        min_epochs: epochs trained before early stopping may end the run.
        ensemble: train this many models from the seeds seed, seed + 1, ... and keep them as one model that
            averages their class probabilities (InceptionTime's is 5); each member's run is in OUT/members/.
        threads: PyTorch's threads while training (0: one for a model whose training step is under 100 MFLOP,
            where sharing a step costs more than it saves and a busy core stalls it; else one per core).
    """

    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    workers: int = 2
    seed: int = 0
    val_fraction: float = 0.2
    augment: bool = False
    flip: bool = False
    devices: Any = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32"
    accelerator: str = "auto"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    verbose: bool = False
    max_time: str | None = None
    patience: int | None = None
    min_epochs: int | None = None
    ensemble: int = 1
    threads: int = 0

    def __post_init__(self):
        lightning_precision(self.precision)  # an unknown precision fails here, before any data is read
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}: expected one of {', '.join(SCHEDULES)}")
        if self.max_time is not None:
            parse_duration(self.max_time)
        if self.patience is not None and self.patience < 0:
            raise ConfigError(f"patience is a number of epochs (0: no early stopping), got {self.patience}")
        if self.min_epochs is not None and self.min_epochs < 1:
            raise ConfigError(f"min_epochs must be at least 1, got {self.min_epochs}")
        for name, low in LOWEST.items():
            if isinstance(getattr(self, name), int) and getattr(self, name) < low:
                raise ConfigError(f"{name} must be at least {low}, got {getattr(self, name)}")
        if self.lr < 0 or self.weight_decay < 0:
            raise ConfigError(f"lr and weight_decay cannot be negative, got {self.lr} and {self.weight_decay}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction is a share of the training data, 0 <= share < 1, got {self.val_fraction}")
        if isinstance(self.devices, str) and self.devices.isdigit():
            self.devices = int(self.devices)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
