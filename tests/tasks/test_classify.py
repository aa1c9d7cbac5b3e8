"""Train → evaluate → predict through the `cnnlstm` command, resume, atomic checkpoints, DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import cnnlstm as cl
from cnnlstm.cli import main
from cnnlstm.tasks._lightning import AtomicCheckpointIO

# a tiny model: 2 conv blocks of 4 and 8 channels, 4 frames of 24x24
TINY_MODEL = ["--backbone-channels", "4,8", "--bridge", "grid", "--hidden-size", "8", "--clip-len", "4", "--size", "24"]


def _train(data, out, *extra):
    args = [
        "train",
        str(data),
        "--out",
        str(out),
        *TINY_MODEL,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--workers",
        "0",
        *extra,
    ]
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tiny_videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    result = _train(tiny_videos, out)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_train_writes_the_run_folder(trained):
    out, output = trained
    for name in (
        "config.json",
        "model.safetensors",
        "labels.json",
        "data.json",
        "run.json",
        "metrics.csv",
        "curves.png",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    ):
        assert (out / name).is_file(), name
    run = json.loads((out / "run.json").read_text())
    assert run["classes"] == sorted(run["classes"]) and len(run["classes"]) == 8
    assert run["train_videos"] + run["val_videos"] == 24
    assert "best val accuracy" in output and "skipped 0 file(s)" in output
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_saved_model_is_the_epoch_with_the_lowest_validation_loss(tiny_videos, tmp_path):
    # accuracy saturates and ties kept the first epoch: the run must keep the lowest validation loss
    from safetensors.torch import load_file

    from cnnlstm.apps.plots import read_epoch_metrics

    out = tmp_path / "r"
    result = _train(tiny_videos, out, "--epochs", "3", "--lr", "0.01")
    assert result.exit_code == 0, result.output
    m = read_epoch_metrics(out / "metrics.csv")
    best_epoch, _ = min(m["val_loss"], key=lambda ev: ev[1])
    ckpt = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    assert ckpt["epoch"] == best_epoch
    saved = load_file(out / "model.safetensors")
    for k, v in saved.items():
        torch.testing.assert_close(ckpt["state_dict"]["model." + k], v)
    run = json.loads((out / "run.json").read_text())
    assert run["best_val_acc"] == round(dict(m["val_acc"])[best_epoch], 4)


def test_run_model_loads_and_checkpoints_are_weights_only(trained):
    out, _ = trained
    model = cl.CNNLSTM.from_pretrained(out)
    assert model.config.num_classes == 8 and model.config.bridge == "grid"
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)  # raises if it needed pickle code
    assert "state_dict" in ckpt


def test_evaluate_prints_table_and_writes_confusion(trained, tiny_videos):
    out, _ = trained
    result = CliRunner().invoke(main, ["evaluate", str(out), str(tiny_videos)])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "macro-F1" in result.output and "right-top" in result.output
    assert (out / "confusion.png").is_file()
    js = CliRunner().invoke(main, ["evaluate", str(out), str(tiny_videos), "--json"])
    data = json.loads(js.output)
    assert data["videos"] == 8 and len(data["confusion"]) == 8
    assert sum(map(sum, data["confusion"])) == 8
    assert 0.0 <= data["accuracy"] <= 1.0


def test_predict_top_k_and_bad_file(trained, tiny_videos, tmp_path):
    out, _ = trained
    video = next((Path(tiny_videos) / "test" / "up-left").glob("*.mp4"))
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    result = CliRunner().invoke(main, ["predict", str(out), str(video), str(bad), "--top-k", "2", "--json"])
    rows = json.loads(result.output)
    assert result.exit_code == 1  # one file could not be read
    assert len(rows[0]["top"]) == 2
    assert abs(sum(t["prob"] for t in rows[0]["top"])) <= 1.0001
    assert rows[0]["top"][0]["prob"] >= rows[0]["top"][1]["prob"]
    assert rows[1]["path"] == str(bad) and "error" in rows[1]


def test_resume_continues_from_last_checkpoint(tiny_videos, tmp_path):
    out = tmp_path / "r"
    assert _train(tiny_videos, out).exit_code == 0
    first = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    result = _train(tiny_videos, out, "--resume", "--epochs", "2")
    assert result.exit_code == 0, result.output
    second = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert second["epoch"] > first["epoch"]
    assert second["global_step"] == 2 * first["global_step"]  # one more epoch of the same size, not two
    metrics = (out / "metrics.csv").read_text().splitlines()
    epochs = {line.split(",")[0] for line in metrics[1:]}
    assert {"0", "1"} <= epochs, "the first epoch's metrics were lost on resume"


def test_training_into_a_used_run_folder_needs_resume_or_overwrite(trained, tiny_videos):
    out, _ = trained
    result = CliRunner().invoke(main, ["train", str(tiny_videos), "--out", str(out)])
    assert result.exit_code != 0 and "--resume" in result.output and "--overwrite" in result.output


def test_resume_without_checkpoint_is_a_clear_error(tiny_videos, tmp_path):
    result = CliRunner().invoke(main, ["train", str(tiny_videos), "--out", str(tmp_path / "none"), "--resume"])
    assert result.exit_code != 0 and "nothing to resume" in result.output


def test_broken_files_are_named_and_counted(tiny_videos, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(Path(tiny_videos) / "train", data)
    (data / "up-left" / "empty.mp4").write_bytes(b"")
    (data / "down-left" / "garbage.mp4").write_bytes(os.urandom(2000))
    good = next((data / "right-top").glob("*.mp4"))
    (data / "right-top" / "cut.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    result = _train(data, tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "skipped 3 file(s)" in result.output
    for name in ("empty.mp4", "garbage.mp4", "cut.mp4"):
        assert name in result.output
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert len(run["skipped"]) == 3


def test_atomic_checkpoint_keeps_the_old_file_when_a_write_dies(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)

    def dies(obj, f, *a, **k):
        Path(f).write_bytes(b"partial")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_checkpoint_loading_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.ckpt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(Exception, match=r"[Ww]eights only"):
        AtomicCheckpointIO().load_checkpoint(path)


@pytest.mark.slow
def test_ddp_two_processes_on_cpu_see_disjoint_shards(tiny_videos, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "cnnlstm.cli",
        "train",
        str(tiny_videos),
        "--out",
        str(out),
        *TINY_MODEL,
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--val-fraction",
        "0.25",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [set(json.loads((out / "logs" / "seen" / f"rank{r}.json").read_text())) for r in (0, 1)]
    assert seen[0] and seen[1]
    assert not seen[0] & seen[1], "the two processes trained on overlapping samples"
    run = json.loads((out / "run.json").read_text())
    assert len(seen[0] | seen[1]) == run["train_videos"]
    model = cl.CNNLSTM.from_pretrained(out)
    assert model(torch.zeros(1, 4, 3, 24, 24)).shape == (1, 8)


def test_evaluate_without_split_folders_uses_the_held_out_videos(tiny_videos, tmp_path):
    import shutil

    data = tmp_path / "flat"
    shutil.copytree(Path(tiny_videos) / "train", data)  # class folders only: training holds some out
    out = tmp_path / "r"
    assert _train(data, out).exit_code == 0
    run = json.loads((out / "run.json").read_text())
    held = CliRunner().invoke(main, ["evaluate", str(out), str(data), "--json"])
    every = CliRunner().invoke(main, ["evaluate", str(out), str(data), "--all", "--json"])
    assert json.loads(held.output)["videos"] == run["val_videos"] == len(run["held_out"])
    assert json.loads(held.output)["subset"].startswith("held-out")
    assert json.loads(every.output)["videos"] == 24


def test_predict_in_bf16_agrees_with_float32(trained, tiny_videos):
    out, _ = trained
    video = str(next((Path(tiny_videos) / "test" / "up-left").glob("*.mp4")))
    rows = {}
    for precision in ("32", "bf16"):
        result = CliRunner().invoke(
            main, ["predict", str(out), video, "--top-k", "8", "--json", "--precision", precision]
        )
        assert result.exit_code == 0, result.output
        rows[precision] = {t["label"]: t["prob"] for t in json.loads(result.output)[0]["top"]}
    assert rows["32"].keys() == rows["bf16"].keys()
    assert max(abs(rows["32"][k] - rows["bf16"][k]) for k in rows["32"]) < 0.02
    assert rows["32"] != rows["bf16"]  # bf16 really ran: its rounding shows in the probabilities
