"""The demo trains what `cnnlstm train DATA --out OUT` trains: the library's defaults."""

import json

import pytest

from cnnlstm.apps.demo import DIFFERS, demo_lines, run_demo
from cnnlstm.build import preset
from cnnlstm.data.datasets import ClipSpec
from cnnlstm.tasks.options import VIDEO_TRAINING


@pytest.mark.slow
def test_the_demo_trains_the_library_defaults(tiny_videos, tmp_path):
    out = tmp_path / "demo"
    result = run_demo(out, tiny_videos, epochs=1, progress=False)
    run = json.loads((out / "run.json").read_text())
    model, options = run["model"], run["options"]
    assert {k: model[k] for k in preset("video")} == preset("video")  # grid bridge, motion stack
    assert model["input_shape"] == [ClipSpec().clip_len, 3, *ClipSpec().size]
    assert options["epochs"] == 1  # asked for; the rest are the video defaults
    assert {k: options[k] for k in VIDEO_TRAINING if k != "epochs"} == {
        k: v for k, v in VIDEO_TRAINING.items() if k != "epochs"
    }
    assert 0.0 <= result["test_accuracy"] <= 1.0
    lines = demo_lines(result, out, tiny_videos)
    assert lines[0] == "model: " + DIFFERS and lines[1].startswith("test accuracy ")
