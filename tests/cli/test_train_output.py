"""What ``cnnlstm train`` prints when its output goes to a file: one line per epoch and the summary, not
Lightning's chatter or a progress bar's redraws."""

import json
import os
import subprocess
import sys

import pytest

TINY = ["--epochs", "2", "--size", "24", "--clip-len", "4", "--backbone-channels", "4,8", "--hidden-size", "8",
        "--bridge", "grid", "--workers", "0"]  # fmt: skip
NOISE = ("GPU available", "TPU available", "litlogger", "LeafSpec", "does not have many workers", "Traceback", "\r")


def _train(data, out, *extra) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "cnnlstm.cli", "train", str(data), "--out", str(out), *TINY, *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


@pytest.mark.slow
def test_a_redirected_run_prints_one_line_per_epoch_and_no_lightning_chatter(tiny_videos, tmp_path):
    text = _train(tiny_videos, tmp_path / "r")
    for noise in NOISE:
        assert noise not in text, (noise, text)
    lines = text.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [e.split(":")[0] for e in epochs] == ["epoch 1/2", "epoch 2/2"], text
    assert "val_loss" in epochs[1] and "train_acc" in epochs[1]
    assert any(line.startswith("best val accuracy") for line in lines)


@pytest.mark.slow
def test_verbose_shows_what_lightning_says(tiny_videos, tmp_path):
    text = _train(tiny_videos, tmp_path / "r", "--verbose")
    assert "GPU available" in text


@pytest.mark.slow
def test_ctrl_c_keeps_the_best_model_and_says_how_to_resume(tiny_videos, tmp_path):
    import signal
    import time

    from cnnlstm import CNNLSTM

    out = tmp_path / "r"
    # far more epochs than the test waits for, and no early stopping: on a loaded machine a run that stopped by
    # itself before the interrupt arrived made this test fail
    args = [a if a != "2" else "200" for a in TINY] + ["--patience", "0"]
    cmd = [sys.executable, "-m", "cnnlstm.cli", "train", str(tiny_videos), "--out", str(out), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a Ctrl-C at a terminal: SIGINT at its default in the child even where this test run was started with it
    # ignored (nohup, a background job), which the child would inherit and Python would keep (a run that went on)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.time() + 120
    while not (out / "checkpoints" / "last.ckpt").is_file() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" not in text, text
    last = text.strip().splitlines()[-1]
    assert last.startswith("Error: interrupted after ") and last.endswith("--resume"), text
    assert f"--out {out}" in last and "--epochs 200" in last
    CNNLSTM.from_pretrained(out)  # the best model so far, loadable
    run = json.loads((out / "run.json").read_text())
    assert run["stopped"] == "it was interrupted"
    # --resume continues from the last checkpoint, to the epochs asked for
    again = [a if a != "200" else str(run["epochs"] + 2) for a in args]
    done = subprocess.run([*cmd[:7], *again, "--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "run.json").read_text())["epochs"] == run["epochs"] + 2
