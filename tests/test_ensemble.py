"""Ensembles: the mean of the members' probabilities, saved and loaded as one model, trained as one run that
evaluate, predict, export and stream treat as one model."""

import json

import numpy as np
import pytest
import torch

from cnnlstm import CNNLSTM
from cnnlstm.ensemble import Ensemble, load_model
from cnnlstm.errors import ConfigError
from cnnlstm.tasks.options import TrainOptions

pytestmark = pytest.mark.usefixtures("one_thread")

SERIES = {"input_shape": (None, 2), "layout": "NTF", "backbone": "conv1d", "bridge": "none", "hidden_size": 6,
          "backbone_options": {"channels": (4,)}, "num_classes": 3}  # fmt: skip
CLIP = {"input_shape": (5, 3, 16, 16), "backbone_options": {"channels": (4,)}, "hidden_size": 6, "num_classes": 3,
        "motion": "stack"}  # fmt: skip


def _ensemble(kw: dict, k: int = 3) -> Ensemble:
    members = []
    for seed in range(k):
        torch.manual_seed(seed)
        members.append(CNNLSTM(**kw))
    return Ensemble(members).eval()


def test_the_output_is_the_log_of_the_mean_probability_padded_steps_included():
    ens = _ensemble(SERIES)
    x, lengths = torch.randn(4, 9, 2), torch.tensor([9, 3, 6, 1])
    with torch.no_grad():
        got = ens(x, lengths)
        mean = torch.stack([m(x, lengths).softmax(-1) for m in ens.members]).mean(0)
    torch.testing.assert_close(got.exp(), mean, atol=1e-6, rtol=0)
    assert (got.argmax(-1) == mean.argmax(-1)).all()


def test_a_forecaster_ensemble_averages_the_forecasts():
    kw = {**SERIES, "input_shape": (8, 2), "head": "forecast", "head_options": {"horizon": 3}, "num_classes": 2}
    ens = _ensemble(kw, k=2)
    x = torch.randn(2, 8, 2)
    with torch.no_grad():
        torch.testing.assert_close(ens(x), (ens.members[0](x) + ens.members[1](x)) / 2, atol=1e-6, rtol=0)


def test_members_must_be_built_alike_and_at_least_two():
    with pytest.raises(ConfigError, match="member 1 is built differently"):
        Ensemble([CNNLSTM(**SERIES), CNNLSTM(**{**SERIES, "hidden_size": 7})])
    with pytest.raises(ConfigError, match="at least 2 members, got 1"):
        Ensemble([CNNLSTM(**SERIES)])


def test_saved_and_loaded_as_one_model(tmp_path):
    ens = _ensemble(SERIES)
    ens.save_pretrained(tmp_path / "e")
    back = load_model(tmp_path / "e").eval()
    assert isinstance(back, Ensemble) and len(back.members) == 3
    x = torch.randn(2, 7, 2)
    with torch.no_grad():
        torch.testing.assert_close(back(x), ens(x), atol=0, rtol=0)
    assert json.loads((tmp_path / "e" / "ensemble.json").read_text())["members"] == 3
    with pytest.raises(ConfigError, match=r"holds an ensemble of models: load it with cnnlstm\.load_run"):
        CNNLSTM.from_pretrained(tmp_path / "e")


def test_a_stream_equals_the_ensemble_on_the_whole_clip():
    ens = _ensemble({**CLIP})
    clip = torch.randn(2, 5, 3, 16, 16)
    with torch.no_grad():
        whole = ens(clip)
        streamer = ens.stream()
        for t in range(5):
            out = streamer.step(clip[:, t])
        torch.testing.assert_close(out, whole, atol=1e-5, rtol=0)
        state = streamer.get_state()
        assert {k.split(".")[0] for k in state} == {"0", "1", "2"}
        streamer.reset()
        again = [streamer.step(clip[:, t]) for t in range(5)][-1]
    torch.testing.assert_close(again, whole, atol=1e-5, rtol=0)


def _series_npz(path, n=12, steps=10):
    rng = np.random.default_rng(0)
    y = np.array(["up", "down"] * (n // 2))
    x = (
        rng.normal(size=(n, steps, 2)) * 0.3
        + np.where(y == "up", 1.0, -1.0)[:, None, None] * np.linspace(0, 1, steps)[None, :, None]
    )
    np.savez(path, x_train=x, y_train=y, x_test=x[:6], y_test=y[:6])
    return path


def test_an_ensemble_run_trains_its_members_and_is_one_model_for_evaluate_and_export(tmp_path):
    from cnnlstm.apps.evaluate import evaluate
    from cnnlstm.export import export_run
    from cnnlstm.run import load_run
    from cnnlstm.tasks.classify import fit_series

    data = _series_npz(tmp_path / "s.npz")
    model = {
        "backbone": "conv1d",
        "backbone_options": {"channels": (4,), "kernel_size": 3, "pool": 1},
        "hidden_size": 6,
    }
    opts = TrainOptions(epochs=2, batch_size=4, val_fraction=0, ensemble=2, seed=3, progress=False)
    summary = fit_series(data, tmp_path / "run", model, opts)
    assert [m["seed"] for m in summary.members] == [3, 4]
    r = load_run(tmp_path / "run")
    assert isinstance(r.model, Ensemble) and r.classes == ["down", "up"]
    members = [CNNLSTM.from_pretrained(tmp_path / "run" / "members" / str(i)).eval() for i in range(2)]
    assert not torch.equal(members[0].head.fc.weight, members[1].head.fc.weight)  # two seeds, two models
    x = torch.randn(3, 10, 2)
    with torch.no_grad():
        mean = torch.stack([m(x).softmax(-1) for m in members]).mean(0)
        torch.testing.assert_close(r.model(x).exp(), mean, atol=1e-6, rtol=0)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["members"][1]["seed"] == 4
    result = evaluate(tmp_path / "run", data)
    assert result.videos == 6 and 0 <= result.accuracy <= 1
    exported = export_run(tmp_path / "run", out=tmp_path / "export")
    assert exported.reports[0].max_abs_diff < 1e-4 and len(exported.reports) == 1  # the whole-series graph


def test_an_ensemble_resumes_with_its_finished_members_kept(tmp_path):
    from cnnlstm.tasks.classify import fit_series

    data = _series_npz(tmp_path / "s.npz")
    model = {
        "backbone": "conv1d",
        "backbone_options": {"channels": (4,), "kernel_size": 3, "pool": 1},
        "hidden_size": 6,
    }
    opts = TrainOptions(epochs=1, batch_size=4, val_fraction=0, ensemble=2, progress=False)
    fit_series(data, tmp_path / "run", model, opts)
    weights = (tmp_path / "run" / "members" / "0" / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already holds an ensemble's members: use --resume"):
        fit_series(data, tmp_path / "run", model, opts)
    again = fit_series(data, tmp_path / "run", model, TrainOptions(**{**opts.to_dict(), "resume": True}))
    assert len(again.members) == 2
    assert (tmp_path / "run" / "members" / "0" / "model.safetensors").read_bytes() == weights  # kept, not retrained


def test_ensemble_options_are_checked():
    with pytest.raises(ConfigError, match="ensemble must be at least 1, got 0"):
        TrainOptions(ensemble=0)


@pytest.mark.parametrize("name", ["fcn", "lstm-fcn"])
def test_a_series_preset_trains_through_the_entry(tmp_path, name):
    # `cnnlstm train data.npz --preset fcn`: the series preset's conv1d options must not reach the FCN
    from cnnlstm.build import ModelOptions
    from cnnlstm.tasks.entry import train

    data = _series_npz(tmp_path / "s.npz")
    opts = {"epochs": 1, "batch_size": 4, "seed": 0, "progress": False}
    summary = train(data, tmp_path / "run", model=ModelOptions(preset=name, hidden_size=4), options=opts)
    assert summary.model["backbone"] == "fcn" and summary.epochs == 1
    assert ("parallel" in json.dumps(summary.model)) == (name == "lstm-fcn")
