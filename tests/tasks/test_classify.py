"""Video classification trained by the library: the run folder, the kept epoch, resume, broken files, atomic
checkpoints, DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cnnlstm as cl
from cnnlstm.data.datasets import ClipSpec
from cnnlstm.errors import ConfigError, DataError
from cnnlstm.run import Kind, RunFolder
from cnnlstm.tasks._lightning import AtomicCheckpointIO


def test_training_writes_the_run_folder(tiny_run):
    out, summary = tiny_run
    for name in (
        "config.json", "model.safetensors", "labels.json", "data.json", "run.json", "metrics.csv", "curves.png",
        "checkpoints/best.ckpt", "checkpoints/last.ckpt",
    ):  # fmt: skip
        assert (out / name).is_file(), name
    assert summary.kind == Kind.VIDEO_CLASSIFY and summary.epochs == 1
    assert summary.classes == sorted(summary.classes) and len(summary.classes) == 8
    assert summary.train_items + summary.val_items == 24 and summary.val_items > 0  # a stratified hold-out
    run = json.loads((out / "run.json").read_text())
    assert run == json.loads(json.dumps(summary.to_dict())) and run["train_videos"] == summary.train_items
    assert summary.lines()[0].startswith("best val accuracy") and summary.lines()[1] == "skipped 0 file(s)"
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert RunFolder(out).data_spec().input == ClipSpec(clip_len=4, size=(24, 24))


def test_the_kept_model_is_the_epoch_with_the_lowest_validation_loss(tiny_videos, fit_tiny, tmp_path):
    # accuracy saturates and ties kept the first epoch: the run must keep the lowest validation loss
    from safetensors.torch import load_file

    from cnnlstm.apps.plots import read_epoch_metrics

    out = tmp_path / "r"
    summary = fit_tiny(tiny_videos, out, epochs=3, lr=0.01)
    m = read_epoch_metrics(out / "metrics.csv")
    best_epoch, _ = min(m["val_loss"], key=lambda ev: ev[1])
    ckpt = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    assert ckpt["epoch"] == best_epoch
    saved = load_file(out / "model.safetensors")
    for k, v in saved.items():
        torch.testing.assert_close(ckpt["state_dict"]["model." + k], v)
    assert summary.best_val_acc == round(dict(m["val_acc"])[best_epoch], 4)


def test_run_model_loads_and_checkpoints_are_weights_only(tiny_run):
    out, _ = tiny_run
    model = cl.CNNLSTM.from_pretrained(out)
    assert model.config.num_classes == 8 and model.config.bridge == "grid"
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)  # raises if it needed pickle code
    assert "state_dict" in ckpt


def test_resume_continues_from_last_checkpoint(tiny_videos, fit_tiny, tmp_path):
    out = tmp_path / "r"
    fit_tiny(tiny_videos, out)
    first = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    fit_tiny(tiny_videos, out, resume=True, epochs=2)
    second = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert second["epoch"] > first["epoch"]
    assert second["global_step"] == 2 * first["global_step"]  # one more epoch of the same size, not two
    metrics = (out / "metrics.csv").read_text().splitlines()
    epochs = {line.split(",")[0] for line in metrics[1:]}
    assert {"0", "1"} <= epochs, "the first epoch's metrics were lost on resume"


def test_training_into_a_used_run_folder_needs_resume_or_overwrite(tiny_run, tiny_videos, fit_tiny):
    out, _ = tiny_run
    with pytest.raises(ConfigError, match="already holds a run: use --resume to continue it, --overwrite"):
        fit_tiny(tiny_videos, out)


def test_resume_without_checkpoint_is_a_clear_error(tiny_videos, fit_tiny, tmp_path):
    with pytest.raises(ConfigError, match="nothing to resume"):
        fit_tiny(tiny_videos, tmp_path / "none", resume=True)


def test_broken_files_are_named_and_counted(tiny_videos, fit_tiny, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(Path(tiny_videos) / "train", data)
    (data / "up-left" / "empty.mp4").write_bytes(b"")
    (data / "down-left" / "garbage.mp4").write_bytes(os.urandom(2000))
    good = next((data / "right-top").glob("*.mp4"))
    (data / "right-top" / "cut.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    summary = fit_tiny(data, tmp_path / "r")
    assert sorted(Path(s["path"]).name for s in summary.skipped) == ["cut.mp4", "empty.mp4", "garbage.mp4"]
    assert summary.lines()[1] == "skipped 3 file(s):"
    assert len(json.loads((tmp_path / "r" / "run.json").read_text())["skipped"]) == 3


def _copy(tiny_videos, tmp_path, *splits):
    import shutil

    data = tmp_path / "data"
    for split in splits:
        shutil.copytree(Path(tiny_videos) / split, data / split if len(splits) > 1 else data)
    return data


def test_a_class_without_a_readable_video_is_refused_before_training(tiny_videos, fit_tiny, tmp_path):
    data = _copy(tiny_videos, tmp_path, "train")
    for f in (data / "up-left").glob("*.mp4"):
        f.write_bytes(b"")
    with pytest.raises(DataError, match=r"every class needs at least 2 readable training videos .*: up-left has 0\."):
        fit_tiny(data, tmp_path / "r")
    assert not (tmp_path / "r" / "checkpoints").exists()  # refused before any training


def test_a_class_with_one_readable_video_is_refused(tiny_videos, fit_tiny, tmp_path):
    data = _copy(tiny_videos, tmp_path, "train")
    for f in sorted((data / "down-left").glob("*.mp4"))[1:]:
        f.unlink()
    with pytest.raises(DataError, match=r"down-left has 1\. Add videos, or remove the class folder"):
        fit_tiny(data, tmp_path / "r")


def test_a_single_class_is_refused(tiny_videos, fit_tiny, tmp_path):
    import shutil

    data = tmp_path / "one"
    shutil.copytree(Path(tiny_videos) / "train" / "up-left", data / "up-left")
    with pytest.raises(DataError, match=r"holds one class \(up-left\): a classifier needs at least 2"):
        fit_tiny(data, tmp_path / "r")


def test_a_test_class_that_training_lacks_is_refused_at_training_time(tiny_videos, fit_tiny, tmp_path):
    import shutil

    data = _copy(tiny_videos, tmp_path, "train", "test")
    shutil.copytree(data / "test" / "up-left", data / "test" / "sideways")
    with pytest.raises(DataError, match=r"test has class\(es\) that the training data lacks: sideways\."):
        fit_tiny(data, tmp_path / "r")


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
    with pytest.raises(ConfigError, match=r"evil.ckpt cannot be loaded as a weights-only checkpoint \(it holds code"):
        AtomicCheckpointIO().load_checkpoint(path)
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ConfigError, match="or it is damaged"):
        AtomicCheckpointIO().load_checkpoint(path)


def test_resume_over_a_checkpoint_holding_code_is_one_clear_error(tiny_videos, tmp_path):
    """As a user meets it: the command prints one line, no traceback, and runs nothing."""
    from click.testing import CliRunner

    from cnnlstm.cli import main

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    out = tmp_path / "r"
    (out / "checkpoints").mkdir(parents=True)
    torch.save({"x": Evil()}, out / "checkpoints" / "last.ckpt")
    tiny = ["--backbone-channels", "4", "--hidden-size", "4", "--clip-len", "2", "--size", "16", "--workers", "0"]
    result = CliRunner().invoke(main, ["train", str(tiny_videos), "--out", str(out), "--resume", *tiny])
    assert result.exit_code == 1, result.output
    assert "last.ckpt cannot be loaded as a weights-only checkpoint" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_ddp_two_processes_on_cpu_see_disjoint_shards(tiny_videos, tmp_path):
    out = tmp_path / "ddp"
    tiny = ["--backbone-channels", "4,8", "--bridge", "grid", "--hidden-size", "8", "--clip-len", "4", "--size", "24"]
    cmd = [
        sys.executable, "-m", "cnnlstm.cli", "train", str(tiny_videos), "--out", str(out), *tiny, "--epochs", "1",
        "--batch-size", "4", "--workers", "0", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
        "--val-fraction", "0.25",
    ]  # fmt: skip
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


def test_training_stops_when_the_validation_loss_stops_improving(tiny_videos, fit_tiny, tmp_path):
    # lr 0: the weights never change, so once BatchNorm's running statistics settle the loss stops improving
    summary = fit_tiny(tiny_videos, tmp_path / "r", epochs=40, lr=0.0, weight_decay=0.0, patience=2)
    assert summary.epochs < 39 and summary.stopped == "the validation loss did not improve for 2 epochs"
    assert summary.lines()[0].endswith("; stopped because the validation loss did not improve for 2 epochs")
    assert json.loads((tmp_path / "r" / "run.json").read_text())["stopped"] == summary.stopped


def test_early_stopping_waits_for_min_epochs_and_patience_0_turns_it_off(tiny_videos, fit_tiny, tmp_path):
    held = fit_tiny(tiny_videos, tmp_path / "a", epochs=40, lr=0.0, weight_decay=0.0, patience=2, min_epochs=9)
    assert 9 <= held.epochs < 39 and held.stopped.startswith("the validation loss did not improve")
    off = fit_tiny(tiny_videos, tmp_path / "b", epochs=4, lr=0.0, weight_decay=0.0, patience=0)
    assert off.epochs == 4 and off.stopped == "the 4 epochs ran"


def test_training_stops_at_its_time_budget_and_keeps_the_best_so_far(tiny_videos, fit_tiny, tmp_path):
    summary = fit_tiny(tiny_videos, tmp_path / "r", epochs=1000, max_time="2s")
    # the cosine fitted to the budget ends the run, or the clock does where an epoch ran long
    assert summary.stopped.startswith("the time budget (2s) ") and summary.epochs < 1000
    assert (tmp_path / "r" / "model.safetensors").is_file()


def test_a_run_without_early_stopping_says_its_epochs_ran(tiny_run):
    _, summary = tiny_run
    assert summary.stopped == "the 1 epoch ran"
