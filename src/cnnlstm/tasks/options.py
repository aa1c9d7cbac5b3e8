"""Options of a training run, everything but the model and the data; no Lightning needed to read them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["TrainOptions"]


@dataclass
class TrainOptions:
    """How a run trains.

    Attributes:
        epochs, batch_size, lr, weight_decay: AdamW with a cosine schedule over ``epochs``.
        workers: DataLoader processes decoding video.
        seed: seeds the split, the shuffling, the weights and the augmentation.
        val_fraction: share of the training data held out for validation when there is no val split
            (0: all of it trains and the last epoch is kept).
        augment, flip: random resized crops (the same for all frames of a clip); horizontal flips.
        devices, strategy, num_nodes, precision, accelerator: Lightning's Trainer options.
        resume, overwrite: continue the run in the folder from its last checkpoint; start it again.
        progress: show Lightning's progress bar.
    """

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
