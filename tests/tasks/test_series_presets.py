"""The series presets through the training entry, as ``cnnlstm train DATA --preset NAME`` runs them."""

import numpy as np
import pytest

from cnnlstm.build import ModelOptions
from cnnlstm.run import load_run
from cnnlstm.tasks.entry import train

pytestmark = pytest.mark.usefixtures("one_thread")


def _npz(path, lengths=(9, 6, 9, 4, 9, 7, 9, 5), test_lengths=(9, 3, 8, 9)):
    rng = np.random.default_rng(0)

    def make(ls):
        y = np.array(["up", "down"] * (len(ls) // 2))
        x = np.zeros((len(ls), max(ls), 2))
        for i, n in enumerate(ls):
            x[i, :n] = rng.normal(size=(n, 2)) * 0.2 + (1 if y[i] == "up" else -1) * np.linspace(0, 1, n)[:, None]
        return x, y, np.array(ls)

    xtr, ytr, ltr = make(lengths)
    xte, yte, lte = make(test_lengths)
    np.savez(path, x_train=xtr, y_train=ytr, lengths_train=ltr, x_test=xte, y_test=yte, lengths_test=lte)
    return path


@pytest.mark.parametrize("name", ["fcn", "lstm-fcn", "mlstm-fcn"])
def test_a_series_preset_trains_and_evaluates_on_variable_lengths(name, tmp_path):
    from cnnlstm.apps.evaluate import evaluate

    data = _npz(tmp_path / "s.npz")
    small = ModelOptions(preset=name, backbone_channels=(4, 8, 4), hidden_size=4)
    summary = train(data, tmp_path / "run", model=small, options={"epochs": 1, "batch_size": 4, "progress": False})
    assert summary.model["arrangement"] == ("sequential" if name == "fcn" else "parallel")
    r = load_run(tmp_path / "run")
    # a dimension-shuffled LSTM arm takes the longest training series' length; shorter ones are padded to it
    assert r.model.fixed_steps == (None if name == "fcn" else 9)
    result = evaluate(tmp_path / "run", data)
    assert result.videos == 4 and 0 <= result.accuracy <= 1
