"""The threads a training run uses: one for a small model, PyTorch's setting for a big one, set back after."""

import numpy as np
import pytest
import torch

from cnnlstm import CNNLSTM
from cnnlstm._fast import threads
from cnnlstm.errors import ConfigError
from cnnlstm.presets import preset
from cnnlstm.tasks.options import TrainOptions


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _forecaster(lookback: int = 24) -> CNNLSTM:
    kw = {**preset("forecast"), "layout": "NTF", "input_shape": (lookback, 1), "head": "forecast", "num_classes": 1}
    return CNNLSTM(**kw, head_options={"horizon": 12})


def _video() -> CNNLSTM:
    return CNNLSTM(**preset("video"), input_shape=(8, 3, 64, 64), layout="NTCHW", num_classes=4)


def test_step_flops_grow_with_the_batch_and_leave_the_model_as_it_was():
    model = _forecaster()
    model.train()
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    one, four = threads.step_flops(model, torch.randn(1, 24, 1)), threads.step_flops(model, torch.randn(4, 24, 1))
    assert one > 0 and four == pytest.approx(4 * one, rel=0.01)
    assert model.training  # back in the mode it was in
    assert all(torch.equal(stats[k], v) for k, v in model.state_dict().items())  # no BatchNorm statistic moved


def test_a_small_model_trains_on_one_thread_a_big_one_on_all(two_threads):
    assert threads.training_threads(0, _forecaster(), torch.zeros(16, 24, 1)) == 1
    assert threads.training_threads(0, _video(), torch.zeros(8, 8, 3, 64, 64)) == 2
    assert threads.training_threads(0, _forecaster(), None) == 2  # nothing to size a step by: as it is
    assert threads.training_threads(3, _forecaster(), torch.zeros(16, 24, 1)) == 3  # asked for: as asked


def test_torch_threads_sets_them_back(two_threads):
    with threads.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), threads.torch_threads(1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == 2


def test_a_forecast_run_trains_on_one_thread_and_gives_the_process_back_its_own(tmp_path, monkeypatch, two_threads):
    from cnnlstm.tasks import _lightning
    from cnnlstm.tasks.forecast import fit_forecast

    seen = []
    real = _lightning.torch_threads

    def spy(n):
        seen.append(n)
        return real(n)

    monkeypatch.setattr(_lightning, "torch_threads", spy)
    np.save(tmp_path / "s.npy", np.sin(np.arange(80.0) / 3))
    opts = TrainOptions(epochs=1, batch_size=16, progress=False)
    fit_forecast(tmp_path / "s.npy", tmp_path / "run", horizon=4, lookback=12, options=opts)
    fit_forecast(tmp_path / "s.npy", tmp_path / "run2", horizon=4, lookback=12,
                 options=TrainOptions(epochs=1, batch_size=16, progress=False, threads=2))  # fmt: skip
    assert seen == [1, 2] and torch.get_num_threads() == 2


def test_threads_cannot_be_negative():
    with pytest.raises(ConfigError, match="threads must be at least 0, got -1"):
        TrainOptions(threads=-1)
