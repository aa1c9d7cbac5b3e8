"""A cosine learning-rate schedule fitted into a time budget (``--max-time``).

Lightning's ``max_time`` stops training wherever the clock runs out; under a cosine schedule over ``--epochs``
that is mid-schedule, with the learning rate still high, and the kept model is one of a run that never annealed.
:class:`CosineBudget` measures the epochs as they run and shortens the cosine's horizon to the epochs that fit
in what is left of the budget, so the learning rate reaches its end within the budget and training stops there.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import require

L = require("lightning.pytorch", "train", "training")

__all__ = ["CosineBudget"]


class CosineBudget(L.Callback):
    """After each epoch: the epochs that still fit in the time left (at the mean epoch time so far, with a
    ``margin``) become the cosine's horizon where they are fewer than it; training stops when the horizon is
    reached.

    The recursive cosine ``lr_t = eta_min + (lr_{t-1} - eta_min) (1 + cos(pi t / T)) / (1 + cos(pi (t-1) / T))``
    telescopes from the epoch of a change, so a shortened ``T`` still ends at ``eta_min`` at epoch ``T``.

    Attributes:
        horizon: the cosine's epochs after the last change; None while the budget allows all of them.
    """

    def __init__(self, margin: float = 0.9):
        self.margin = margin
        self.horizon: int | None = None
        self.stopped = False

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        timer = next((c for c in trainer.callbacks if isinstance(c, L.callbacks.Timer)), None)
        configs = trainer.lr_scheduler_configs
        sched = configs[0].scheduler if configs else None
        if timer is None or not isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR):
            return
        left = timer.time_remaining("train")
        if left is None:
            return
        done = trainer.current_epoch + 1
        per_epoch = max(timer.time_elapsed("train"), 1e-9) / done
        fits = done + int(max(left, 0.0) * self.margin / per_epoch)
        if fits < sched.T_max:
            sched.T_max = max(done, fits)
            self.horizon = sched.T_max
        if self.horizon is not None and done >= self.horizon:
            trainer.should_stop = self.stopped = True

    def reason(self, budget: str, epochs: int) -> str | None:
        """Why training stopped, where this callback ended it; else None."""
        if not self.stopped:
            return None
        return f"the time budget ({budget}) fitted {self.horizon} of the {epochs} epochs (the cosine fitted to it)"

    def state_dict(self) -> dict[str, Any]:
        return {"horizon": self.horizon}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.horizon = state_dict.get("horizon")
