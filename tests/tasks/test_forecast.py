"""Forecasting: windows, MASE, the forecast head trained through the CLI, and its plot."""

import numpy as np
import pytest
from click.testing import CliRunner

from cnnlstm.apps.forecast import mase
from cnnlstm.cli import main
from cnnlstm.data.series import load_sequence
from cnnlstm.errors import DataError
from cnnlstm.tasks.forecast import windows


def test_windows_are_relative_to_their_own_level():
    v = np.arange(20, dtype=np.float32)[:, None] * 2  # a pure trend
    x, y = windows(v, lookback=4, horizon=2, targets=[0])
    assert x.shape == (15, 4, 1) and y.shape == (15, 2, 1)
    # every window of a straight line looks the same once its level is taken off
    assert np.allclose(x.numpy(), x[0].numpy()) and np.allclose(y.numpy(), y[0].numpy())
    np.testing.assert_allclose(y[0, :, 0].numpy(), [5.0, 7.0])  # (8, 10) minus the window mean 3


def test_windows_need_enough_steps():
    with pytest.raises(DataError, match="too short for lookback 8 \\+ horizon 4"):
        windows(np.zeros((10, 1), np.float32), 8, 4, [0])


def test_mase_of_the_seasonal_naive_forecast_in_sample_is_one():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(48, 1)).cumsum(axis=0)
    # the seasonal naive forecast of the last season from the one before scores exactly its own scale
    assert mase(h[-12:], h[-24:-12], h, 12) == pytest.approx(
        np.mean(np.abs(h[-12:] - h[-24:-12])) / np.mean(np.abs(h[12:] - h[:-12]))
    )
    assert mase(h[-12:], h[-12:], h, 12) == 0.0


def test_load_sequence_sources(tmp_path):
    v, names = load_sequence("aeon:Airline")
    assert v.shape == (144, 1) and names == ["Passengers"] and v[0, 0] == 112
    np.save(tmp_path / "s.npy", np.arange(10.0))
    assert load_sequence(tmp_path / "s.npy")[0].shape == (10, 1)
    (tmp_path / "c.csv").write_text("date,a,b\n2020-01,1,2\n2020-02,3,x\n")
    assert load_sequence(tmp_path / "c.csv")[1] == ["a"]  # a column with text in it is not a channel
    (tmp_path / "e.csv").write_text("date,note\n2020-01,x\n")
    with pytest.raises(DataError, match="no numeric column to forecast"):
        load_sequence(tmp_path / "e.csv")
    (tmp_path / "d.csv").write_text("date,a,b\n2020-01,1,2\n2020-02,3,4\n")
    v, names = load_sequence(tmp_path / "d.csv")
    assert names == ["a", "b"] and v.tolist() == [[1, 2], [3, 4]]
    with pytest.raises(DataError, match="no such file"):
        load_sequence(tmp_path / "missing.csv")


@pytest.mark.slow
def test_forecast_train_and_score_through_the_cli(tmp_path):
    t = np.arange(120, dtype=np.float32)
    series = 10 + 0.1 * t + np.sin(2 * np.pi * t / 12) * 3  # trend + season 12
    np.save(tmp_path / "s.npy", series)
    out = tmp_path / "run"
    r = CliRunner().invoke(
        main,
        [
            "train",
            str(tmp_path / "s.npy"),
            "--task",
            "forecast",
            "--out",
            str(out),
            "--horizon",
            "6",
            "--lookback",
            "12",
            "--epochs",
            "30",
            "--lr",
            "3e-3",
        ],
    )
    assert r.exit_code == 0, r.output
    f = CliRunner().invoke(main, ["forecast", str(out), "--season", "12"])
    assert f.exit_code == 0, f.output
    values = [float(v) for v in f.output.splitlines()[0].split(":")[1].split()]
    assert len(values) == 6
    score = float(f.output.split("MASE ")[1].split()[0])
    assert 0 <= score < 3  # a learnt forecast of a clean seasonal trend is not wildly off
    assert (out / "forecast.png").read_bytes()[:4] == b"\x89PNG"
    wrong = CliRunner().invoke(main, ["forecast", str(tmp_path / "nope")])
    assert wrong.exit_code != 0
