"""``cnnlstm train --rnn convlstm`` end to end on tiny videos, then evaluate, predict, stream and export that run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import cnnlstm as cl
from cnnlstm.cli import main


@pytest.fixture(scope="module")
def convlstm_run(tiny_videos, tmp_path_factory):
    """A run folder of a tiny ConvLSTM model trained for 1 epoch by the CLI."""
    out = tmp_path_factory.mktemp("convlstm") / "run"
    args = ["train", str(tiny_videos), "--out", str(out), "--rnn", "convlstm", "--rnn-kernel-size", "5"]
    args += ["--backbone-channels", "4,8", "--bridge", "grid", "--hidden-size", "6", "--num-layers", "2"]
    args += ["--clip-len", "4", "--size", "24", "--epochs", "1", "--batch-size", "8", "--workers", "0"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_train_writes_a_convlstm_run(convlstm_run):
    config = json.loads((convlstm_run / "config.json").read_text())
    assert (config["rnn"], config["rnn_options"], config["hidden_size"]) == ("convlstm", {"kernel_size": 5}, 6)
    model = cl.CNNLSTM.from_pretrained(convlstm_run).eval()
    assert isinstance(model.rnn, cl.ConvLSTM) and model.rnn.num_layers == 2 and model.rnn.kernel_size == (5, 5)
    with torch.no_grad():
        assert model(torch.randn(2, 4, 3, 24, 24)).shape == (2, 8)


@pytest.mark.slow
def test_evaluate_and_predict_the_run(convlstm_run, tiny_videos):
    result = CliRunner().invoke(main, ["evaluate", str(convlstm_run), str(tiny_videos), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert 0 <= scores["accuracy"] <= 1
    video = next(Path(tiny_videos, "test").rglob("*.mp4"))
    result = CliRunner().invoke(main, ["predict", str(convlstm_run), str(video), "--top-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    (pred,) = json.loads(result.output)
    assert len(pred["top"]) == 2 and 0 < pred["top"][0]["prob"] <= 1


@pytest.mark.slow
def test_stream_the_run(convlstm_run, tiny_videos, tmp_path):
    video = next(Path(tiny_videos, "test").rglob("*.mp4"))
    png = tmp_path / "timeline.png"
    result = CliRunner().invoke(main, ["stream", str(convlstm_run), str(video), "--every", "4", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert re.search(r"^\d+ frames streamed; final: \S+ [\d.]+$", result.output, re.M), result.output
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_export_the_run_to_onnx(convlstm_run, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "exp"
    result = CliRunner().invoke(main, ["export", str(convlstm_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"onnx clip -> {out / 'model.onnx'}" in result.output
    assert f"onnx step -> {out / 'step.onnx'}" in result.output
    diffs = [float(d) for d in re.findall(r"max \|onnx - torch\| = (\S+)", result.output)]
    assert len(diffs) == 8 and max(diffs) <= 1e-4  # 2 batches x 3 lengths, and 2 batches of streamed frames
    from cnnlstm.export._common import session

    model = cl.CNNLSTM.from_pretrained(convlstm_run).eval()
    x = torch.randn(2, 9, 3, 24, 24)  # a clip length the export never saw
    with torch.no_grad():
        np.testing.assert_allclose(session(out / "model.onnx").run(None, {"clip": x.numpy()})[0], model(x), atol=1e-4)


@pytest.mark.slow
def test_export_the_run_to_torchscript_is_a_clear_error(convlstm_run, tmp_path):
    result = CliRunner().invoke(main, ["export", str(convlstm_run), "--format", "torchscript", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "does not trace to TorchScript" in result.output and "ONNX" in result.output
