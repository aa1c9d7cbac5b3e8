"""Forecast inference: a run of another kind is refused with a command that exists."""

import pytest
import torch

import cnnlstm as cl
from cnnlstm.apps.forecast import forecast
from cnnlstm.cli import main
from cnnlstm.errors import ConfigError
from cnnlstm.run import DataSpec, Kind, RunFolder, SeriesSpec


def test_a_classifier_run_is_refused_with_the_command_that_trains_a_forecaster(tmp_path):
    torch.manual_seed(0)
    model = cl.CNNLSTM("conv1d", "none", layout="NTF", input_shape=(None, 1), hidden_size=4, num_classes=2,
                       backbone_options={"channels": (4,)})  # fmt: skip
    folder = RunFolder(tmp_path)
    folder.write_model(model, ["a", "b"], DataSpec(Kind.SERIES_CLASSIFY, SeriesSpec("x.npy", 1, [0.0], [1.0])))
    want = r"series-classify run, not a forecaster \(train one with cnnlstm train --task forecast\)"
    with pytest.raises(ConfigError, match=want):
        forecast(tmp_path)
    train = main.commands["train"]
    task = next(p for p in train.params if p.name == "task")
    assert "forecast" in task.type.choices  # the command named in the message exists
