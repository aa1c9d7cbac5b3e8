"""`cnnlstm predict` on a series run: every series of a file, normalised as in training; what cannot be
predicted is named; `cnnlstm stream` refuses a series run with what to do instead."""

import numpy as np
import pytest
import torch

from cnnlstm.apps.predict import predict
from cnnlstm.apps.stream import stream_video
from cnnlstm.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def series_run(tmp_path_factory):
    from cnnlstm.tasks.classify import fit_series
    from cnnlstm.tasks.options import TrainOptions

    tmp = tmp_path_factory.mktemp("series")
    rng = np.random.default_rng(0)
    y = np.array(["up", "down"] * 8)
    x = (
        rng.normal(size=(16, 12, 2)) * 0.2
        + np.where(y == "up", 1.0, -1.0)[:, None, None] * np.linspace(0, 1, 12)[None, :, None]
    )
    np.savez(tmp / "s.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
    model = {
        "backbone": "conv1d",
        "backbone_options": {"channels": (4,), "kernel_size": 3, "pool": 1},
        "hidden_size": 4,
    }
    fit_series(tmp / "s.npz", tmp / "run", model, TrainOptions(epochs=3, batch_size=4, val_fraction=0, progress=False))
    return tmp, x


def test_each_series_of_a_file_gets_the_models_probabilities(series_run):
    from cnnlstm.run import load_run

    tmp, x = series_run
    rows = predict(tmp / "run", [tmp / "s.npz"], topk=2)
    assert [r["path"] for r in rows] == [f"{tmp / 's.npz'} #{i}" for i in range(5)]  # x_test: 5 series
    r = load_run(tmp / "run")
    with torch.inference_mode():
        probs = r.model(torch.from_numpy(r.spec.normalizer(x[:5].astype(np.float32)))).softmax(-1)
    for row, p in zip(rows, probs):
        assert row["top"][0]["label"] == r.classes[int(p.argmax())]
        assert row["top"][0]["prob"] == pytest.approx(float(p.max()), abs=1e-4)


def test_a_csv_without_labels_and_a_bad_file_are_each_one_row(series_run, tmp_path):
    tmp, x = series_run
    wide = tmp_path / "new.csv"  # wide, univariate: the run has 2 features, so this one is refused by name
    wide.write_text("v0,v1,v2\n1,2,3\n")
    npy = tmp_path / "new.npy"
    np.save(npy, x[:2].astype(np.float32))
    rows = predict(tmp / "run", [npy, wide, tmp_path / "missing.npz"])
    assert [r["path"] for r in rows[:2]] == [f"{npy} #0", f"{npy} #1"] and "top" in rows[0]
    assert "1 features, the run trained on 2" in rows[2]["error"] and "line 2" in rows[2]["path"]
    assert "no such file" in rows[3]["error"]


def test_stream_refuses_a_series_run_and_says_what_to_do(series_run):
    tmp, _ = series_run
    with pytest.raises(ConfigError, match=r"learnt series-classify: stream reads video files.*cnnlstm predict"):
        stream_video(tmp / "run", tmp / "s.npz")
