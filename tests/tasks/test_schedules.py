"""The learning rate over a run: each schedule's shape, and a run trained with each."""

import itertools
from types import SimpleNamespace

import pytest

from cnnlstm.errors import ConfigError
from cnnlstm.tasks.classify import ClassifyModule
from cnnlstm.tasks.options import SCHEDULES, TrainOptions

CONFIG = {"input_shape": [4, 3, 16, 16], "backbone_options": {"channels": [4]}, "hidden_size": 4, "num_classes": 2}


def _lrs(schedule: str, steps: int = 100, epochs: int = 5) -> list[float]:
    module = ClassifyModule(CONFIG, lr=1e-2, max_epochs=epochs, schedule=schedule)
    module._trainer = SimpleNamespace(estimated_stepping_batches=steps)
    got = module.configure_optimizers()
    opt = got["optimizer"] if isinstance(got, dict) else got
    sched = got.get("lr_scheduler") if isinstance(got, dict) else None
    per_step = isinstance(sched, dict)
    sched = sched["scheduler"] if per_step else sched
    lrs = []
    for i in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None and (per_step or (i + 1) % (steps // epochs) == 0):
            sched.step()
    return lrs


def test_warmup_cosine_rises_from_a_tenth_then_falls_to_zero():
    lrs = _lrs("warmup-cosine")
    peak = lrs.index(max(lrs))
    assert lrs[0] == pytest.approx(1e-3) and 5 <= peak <= 12 and max(lrs) == pytest.approx(1e-2, rel=1e-3)
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :])) and lrs[-1] < 1e-4


def test_onecycle_rises_then_falls_far_below_its_start():
    lrs = _lrs("onecycle")
    peak = lrs.index(max(lrs))
    assert 20 <= peak <= 40 and max(lrs) == pytest.approx(1e-2, rel=1e-3) and lrs[-1] < lrs[0] / 10


def test_cosine_steps_per_epoch_and_constant_never_changes():
    cos = _lrs("cosine")
    assert cos[0] == cos[19] == 1e-2 and cos[20] < cos[19] and len(set(cos)) == 5
    assert set(_lrs("constant")) == {1e-2}


def test_an_unknown_schedule_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="warmup-cosine"):
        TrainOptions(schedule="step")


@pytest.mark.parametrize("schedule", [s for s in SCHEDULES if s != "cosine"])
def test_a_run_trains_with_each_schedule(schedule, tiny_videos, fit_tiny, tmp_path):
    summary = fit_tiny(tiny_videos, tmp_path / "r", epochs=2, schedule=schedule)
    assert summary.epochs == 2 and summary.options["schedule"] == schedule


def test_plateau_halves_the_rate_after_50_flat_epochs_down_to_its_floor():
    module = ClassifyModule(CONFIG, lr=1e-3, max_epochs=500, schedule="plateau")
    got = module.configure_optimizers()
    opt, sched = got["optimizer"], got["lr_scheduler"]
    assert sched["monitor"] == "train_loss_epoch"  # the training loss: series runs often have no validation
    lrs = []
    for _ in range(300):
        sched["scheduler"].step(1.0)  # a training loss that never improves
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[49] == 1e-3 and lrs[51] == pytest.approx(5e-4)  # 50 flat epochs, then halved
    assert lrs[-1] == pytest.approx(1e-4) and min(lrs) == pytest.approx(1e-4)  # never below the floor


def test_without_validation_the_epoch_of_the_lowest_training_loss_is_kept(tmp_path):
    import csv

    import numpy as np
    import torch

    from cnnlstm import CNNLSTM
    from cnnlstm.tasks.forecast import fit_forecast

    np.save(tmp_path / "s.npy", np.sin(np.arange(120.0) / 3) + np.random.default_rng(0).normal(0, 0.3, 120))
    # a rate far too high: the training loss jumps about, so its lowest epoch is not the last
    opts = TrainOptions(epochs=12, batch_size=16, lr=0.3, schedule="constant", progress=False)
    fit_forecast(tmp_path / "s.npy", tmp_path / "run", horizon=4, lookback=12, options=opts)
    with open(next((tmp_path / "run" / "logs").glob("version_*/metrics.csv"))) as f:
        rows = list(csv.DictReader(f))
    losses = {int(r["epoch"]): float(r["train_loss_epoch"]) for r in rows if r.get("train_loss_epoch")}
    lowest = min(losses, key=losses.get)
    assert lowest != max(losses)  # the test means something only if the last epoch was not the lowest
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["epoch"] == lowest
    kept = CNNLSTM.from_pretrained(tmp_path / "run").state_dict()
    assert all(torch.equal(v, best["state_dict"]["model." + k]) for k, v in kept.items())


class _Clock(__import__("lightning").pytorch.callbacks.Timer):
    """A Timer whose clock the test moves: ``per_epoch`` seconds an epoch against a ``budget``."""

    def __init__(self, budget: float, per_epoch: float):
        super().__init__(duration={"seconds": budget})
        self.budget, self.per_epoch, self.epochs = budget, per_epoch, 0

    def time_elapsed(self, stage="train"):
        return self.epochs * self.per_epoch

    def time_remaining(self, stage="train"):
        return self.budget - self.time_elapsed()


def test_a_time_budget_shortens_the_cosine_so_it_ends_inside_the_budget():
    import torch

    from cnnlstm.tasks.budget import CosineBudget

    module = ClassifyModule(CONFIG, lr=1e-2, max_epochs=300, schedule="cosine")
    opt = module.configure_optimizers()["optimizer"]
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=300)
    clock, budget = _Clock(budget=100.0, per_epoch=2.0), CosineBudget(margin=0.9)
    trainer = SimpleNamespace(callbacks=[clock], lr_scheduler_configs=[SimpleNamespace(scheduler=sched)],
                              current_epoch=0, should_stop=False)  # fmt: skip
    lrs = []
    while not trainer.should_stop and trainer.current_epoch < 300:
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        clock.epochs += 1
        budget.on_train_epoch_end(trainer, module)
        sched.step()
        trainer.current_epoch += 1
    # 50 epochs fit in 100 s at 2 s each; with the margin the cosine ends at epoch 45, inside the budget
    assert budget.horizon == 45 and len(lrs) == 45 and clock.time_elapsed() <= 100
    assert lrs[0] == 1e-2 and all(a > b for a, b in itertools.pairwise(lrs)) and opt.param_groups[0]["lr"] < 1e-6
    assert "fitted 45 of the 300 epochs" in budget.reason("100s", 300)


def test_a_budget_that_allows_every_epoch_changes_nothing():
    import torch

    from cnnlstm.tasks.budget import CosineBudget

    module = ClassifyModule(CONFIG, lr=1e-2, max_epochs=10, schedule="cosine")
    opt = module.configure_optimizers()["optimizer"]
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    clock, budget = _Clock(budget=1000.0, per_epoch=1.0), CosineBudget()
    trainer = SimpleNamespace(callbacks=[clock], lr_scheduler_configs=[SimpleNamespace(scheduler=sched)],
                              current_epoch=0, should_stop=False)  # fmt: skip
    for _ in range(10):
        opt.step()
        clock.epochs += 1
        budget.on_train_epoch_end(trainer, module)
        sched.step()
        trainer.current_epoch += 1
    assert sched.T_max == 10 and budget.horizon is None and not trainer.should_stop
    assert budget.reason("1000s", 10) is None
