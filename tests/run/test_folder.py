"""The run folder: written and read in one place; every missing or damaged file is one clear error."""

import json

import pytest
import torch

import cnnlstm as cl
from cnnlstm.errors import ConfigError
from cnnlstm.run import DataSpec, Kind, RunFolder, SeriesSpec, TrainSummary, load_run


@pytest.fixture
def run(tmp_path):
    torch.manual_seed(0)
    model = cl.CNNLSTM("conv1d", "none", layout="NTF", input_shape=(None, 2), hidden_size=8, num_classes=3,
                       backbone_options={"channels": (4,)})  # fmt: skip
    folder = RunFolder(tmp_path / "r")
    folder.prepare()
    folder.write_model(model, ["a", "b", "c"], DataSpec(Kind.SERIES_CLASSIFY, SeriesSpec("x.npz", 2, [0, 0], [1, 1])))
    return folder, model


def test_a_written_folder_loads_the_same_model(run):
    folder, model = run
    r = load_run(folder.path)
    assert r.kind == Kind.SERIES_CLASSIFY and r.classes == ["a", "b", "c"] and r.spec.source == "x.npz"
    assert not r.model.training
    x = torch.randn(2, 7, 2)
    torch.testing.assert_close(r.model(x), model.eval()(x))


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "labels.json", "data.json"])
def test_a_missing_file_is_named(run, name):
    folder, _ = run
    (folder.path / name).unlink()
    with pytest.raises(ConfigError, match=f"is not a finished cnnlstm run: {name} is missing"):
        folder.load()


def test_a_truncated_model_file_is_one_clear_error(run):
    folder, _ = run
    path = folder.path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ConfigError, match=r"model.safetensors or config.json is damaged .*train the run again"):
        folder.load()


@pytest.mark.parametrize("text", ['{"format": 2, "kind"', '{"format": 2, "kind": "series-classify", "input": 3}'])
def test_a_damaged_data_json_is_named(run, text):
    folder, _ = run
    (folder.path / "data.json").write_text(text)
    with pytest.raises(ConfigError, match=r"data.json .*(damaged|does not describe a run)"):
        folder.load()


def test_prepare_refuses_to_mix_runs(run):
    folder, _ = run
    with pytest.raises(ConfigError, match=r"--resume: .*last.ckpt does not exist"):
        folder.prepare(resume=True)
    folder.checkpoints.mkdir()
    (folder.checkpoints / "x").write_text("")
    with pytest.raises(ConfigError, match="already holds a run: use --resume"):
        folder.prepare()
    assert folder.prepare(overwrite=True) is None and not folder.checkpoints.exists()


def test_summary_names_its_counts_by_the_run_kind(run):
    folder, _ = run
    s = TrainSummary(Kind.VIDEO_CLASSIFY, "d", ["a"], 10, 3, 2, 1.5, 100, {}, {}, "c.png", best_val_acc=0.5)
    folder.write_summary(s)
    d = json.loads((folder.path / "run.json").read_text())
    assert (d["train_videos"], d["val_videos"], d["kind"]) == (10, 3, "video-classify")
    assert folder.summary() == d
    s.kind = Kind.SERIES_CLASSIFY
    assert "train_series" in s.to_dict()
    assert s.lines()[0] == "best val accuracy 0.5 after 2 epochs, 10 train / 3 val series, 1.5 s"
    assert not any("skipped" in line for line in s.lines())  # no files to skip in a series run


@pytest.mark.parametrize("held_out, rough", [(2, True), (1, True), (40, False)])
def test_an_anomaly_threshold_says_when_too_few_normal_sequences_set_it(held_out, rough):
    s = TrainSummary(Kind.VIDEO_ANOMALY, "d", ["normal"], 30, held_out, 5, 1.5, 100, {}, {}, "c.png", threshold=2.5)
    head = s.lines()[0]
    assert f"threshold 2.500, set on {held_out} held-out normal sequence" in head
    assert ("too few for a reliable false-alarm rate" in head) is rough


def test_a_summary_reads_back_from_what_it_wrote():
    s = TrainSummary(Kind.SERIES_CLASSIFY, "d", ["a", "b"], 10, 0, 2, 1.5, 100, {}, {}, "c.png", stopped="it ran")
    assert TrainSummary.from_dict(json.loads(json.dumps(s.to_dict()))) == s
