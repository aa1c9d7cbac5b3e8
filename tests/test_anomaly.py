"""Anomaly detection: next-step errors, calibration on normal data only, fit/score through the CLI."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import cnnlstm as cl
from cnnlstm.anomaly import AnomalyStats, auroc, calibrate, next_step_errors, targets
from cnnlstm.apps.anomaly import score_anomaly
from cnnlstm.cli import main
from cnnlstm.data.series import save_sequence
from cnnlstm.data.synthetic import injected_anomaly_series, make_anomaly_videos
from cnnlstm.errors import DataError
from cnnlstm.run import Kind, RunFolder
from cnnlstm.tasks.anomaly import anomaly_training, fit_anomaly


def test_targets_shapes():
    assert targets(torch.zeros(2, 5, 3, 32, 32), "video", grid=4).shape == (2, 5, 48)
    x = torch.randn(2, 5, 3)
    assert targets(x, "series") is x


def test_next_step_errors_are_zero_at_step_0_and_on_padding():
    torch.manual_seed(0)
    m = cl.CNNLSTM(
        layout="NTF",
        input_shape=(None, 2),
        backbone_options={"channels": (4,), "causal": True},
        head="frames",
        num_classes=2,
        hidden_size=8,
    ).eval()
    x = torch.randn(3, 6, 2)
    err = next_step_errors(m, x, "series", lengths=torch.tensor([6, 4, 2]))
    assert err.shape == (3, 6)
    assert (err[:, 0] == 0).all() and (err[1, 4:] == 0).all() and (err[2, 2:] == 0).all()
    assert (err[0, 1:] > 0).all()
    pred = m(x)
    torch.testing.assert_close(err[0, 3], (pred[0, 2] - x[0, 3]).pow(2).mean())  # step 3 judged by step 2's guess


def test_horizon_and_residual_targets_judge_step_t_by_the_guess_made_at_t_minus_h():
    x = torch.arange(10.0).reshape(1, 10, 1) ** 2  # a series whose change over 3 steps grows: 6t + 9

    def knows_the_change(seq, lengths=None):  # a model that predicts the change over the next 3 steps exactly
        return 6 * torch.arange(10.0).reshape(1, 10, 1) + 9

    err = next_step_errors(knows_the_change, x, "series", horizon=3, residual=True)
    assert err.shape == (1, 10) and (err == 0).all()

    def stands_still(seq, lengths=None):  # predicts no change: the error is the change it missed
        return torch.zeros_like(seq)

    err = next_step_errors(stands_still, x, "series", horizon=3, residual=True)
    assert (err[0, :3] == 0).all()  # no guess was made for the first 3 steps
    torch.testing.assert_close(err[0, 3:], (6 * torch.arange(7.0) + 9) ** 2)
    err = next_step_errors(stands_still, x, "series", horizon=3, residual=False)  # guesses the value 0
    torch.testing.assert_close(err[0, 3:], x[0, 3:, 0] ** 2)
    # relative: a change that did not come scores 1, the opposite change 2, the right one 0
    err = next_step_errors(stands_still, x, "series", horizon=3, residual=True, relative=0.0)
    torch.testing.assert_close(err[0, 3:], torch.ones(7))
    err = next_step_errors(
        lambda s, lengths=None: -knows_the_change(s), x, "series", horizon=3, residual=True, relative=0
    )
    torch.testing.assert_close(err[0, 3:], torch.full((7,), 2.0))
    err = next_step_errors(knows_the_change, x, "series", horizon=3, residual=True, relative=1.0)
    assert (err == 0).all()
    err = next_step_errors(stands_still, x, "series", horizon=3, residual=True, lengths=torch.tensor([5]))
    assert (err[0, 5:] == 0).all() and (err[0, 3:5] > 0).all()


def test_calibration_uses_normal_errors_only_and_keeps_its_false_alarm_rate():
    rng = np.random.default_rng(0)
    normal = [rng.gamma(2.0, 1.0, 30) for _ in range(200)]
    stats = calibrate(normal, false_alarm_rate=0.1, warmup=2, horizon=2, residual=True, grid=6, relative=0.5)
    assert stats.target == {"grid": 6, "horizon": 2, "residual": True, "relative": 0.5}
    scores = np.array([stats.clip_score(e) for e in normal])
    assert abs((scores > stats.threshold).mean() - 0.1) <= 0.01
    steps = np.concatenate([e[2:] for e in normal])
    assert stats.mean == pytest.approx(steps.mean()) and stats.std == pytest.approx(steps.std())
    # the warm-up steps do not count: a huge error there changes nothing
    e = normal[0].copy()
    e[1] = 1e6
    assert stats.clip_score(e) == stats.clip_score(normal[0])
    e[10] = 1e6
    assert stats.clip_score(e) > stats.threshold


def test_auroc_matches_the_definition():
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auroc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert np.isnan(auroc([1, 1], [0.1, 0.2]))


def test_stats_round_trip():
    s = AnomalyStats(1.0, 2.0, 3.0, 0.05, warmup=2)
    assert AnomalyStats(**s.to_dict()) == s


@pytest.mark.slow
def test_series_planted_anomalies_score_higher_than_normal_steps(tmp_path):
    v, y = injected_anomaly_series(length=1600, every=200)
    q = len(v) // 4
    train = save_sequence(tmp_path / "train.csv", v[:q])
    test = save_sequence(tmp_path / "test.csv", v[q:], y[q:])
    run = tmp_path / "run"
    fit = fit_anomaly(train, run, anomaly_training(train, {"epochs": 15, "progress": False}), window=64)
    assert fit.kind == Kind.SERIES_ANOMALY and fit.threshold == RunFolder(run).data_spec().anomaly.threshold
    r = score_anomaly(run, test)
    assert r["auroc"] > 0.6 and r["steps"] == len(v) - q
    z = np.array(json.loads((run / "scores" / "series_scores.json").read_text())["z"])
    spikes = np.flatnonzero(y[q:])[:1]  # the first anomaly is a spike
    assert z[spikes].min() > np.percentile(z[y[q:] == 0], 99)
    assert (run / "scores" / "timeline.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_video_fit_and_score_through_the_cli(tmp_path):
    """The commands' wiring, end to end: fit, score, and the table it prints."""
    data = make_anomaly_videos(tmp_path / "v", normal_train=10, normal_test=4, per_anomaly=1, size=(32, 32), frames=10)
    run = tmp_path / "run"
    fit = CliRunner().invoke(main, ["anomaly", "fit", str(data), "--out", str(run), "--epochs", "2", "--size", "32"])
    assert fit.exit_code == 0, fit.output
    res = CliRunner().invoke(main, ["anomaly", "score", str(run), str(data)])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip().endswith(".mp4")]
    assert len(lines) == 8  # 4 normal + one of each of the 4 anomaly kinds
    assert res.output.splitlines()[0].split() == ["score", "flag", "path"]
    assert "AUROC" in res.output and (run / "scores" / "timelines.png").is_file()
    wrong = CliRunner().invoke(main, ["anomaly", "score", str(run.parent), str(data)])
    assert wrong.exit_code != 0


def test_scoring_with_a_classifier_run_is_a_clear_error(tmp_path):
    m = cl.CNNLSTM(
        layout="NTF", input_shape=(None, 1), num_classes=2, hidden_size=4, backbone_options={"channels": (4,)}
    )
    m.save_pretrained(tmp_path)
    (tmp_path / "labels.json").write_text('["a", "b"]')
    (tmp_path / "data.json").write_text(
        json.dumps({"kind": "series", "source": "x", "features": 1, "mean": [0.0], "std": [1.0]})
    )  # a folder of format 1, before data.json had a number
    with pytest.raises(DataError, match="is a series-classify run, not an anomaly run"):
        score_anomaly(tmp_path, "aeon:KDD-TSAD_135")
