"""The learning rate over a run: each schedule's shape, and a run trained with each."""

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
