"""The command line parses and prints; the library decides. Options come from the library's dataclasses."""

import dataclasses

import pytest
from click.testing import CliRunner

from cnnlstm.build import ModelOptions
from cnnlstm.cli import main
from cnnlstm.cli._options import given, parse_ints, parse_size
from cnnlstm.data.datasets import ClipSpec
from cnnlstm.errors import DataError
from cnnlstm.run import Kind, TrainSummary
from cnnlstm.tasks.options import TrainOptions, lightning_precision


def _names(command) -> set[str]:
    return {p.name for p in main.commands[command].params}


@pytest.mark.parametrize("cls, skip", [(ModelOptions, ()), (ClipSpec, ("mean", "std")), (TrainOptions, ("progress",))])
def test_train_has_an_option_for_every_field(cls, skip):
    fields = {f.name for f in dataclasses.fields(cls)} - set(skip)
    assert fields <= _names("train")


def test_help_comes_from_the_fields_docs():
    result = CliRunner().invoke(main, ["train", "--help"])
    text = " ".join(result.output.split())
    assert "--weight-decay FLOAT AdamW's weight decay. [default: 0.0001]" in text
    assert "--pad [repeat|lengths] Videos shorter than T" in text


def _summary() -> TrainSummary:
    return TrainSummary(Kind.VIDEO_CLASSIFY, "d", ["a", "b"], 6, 2, 3, 1.5, 100, {}, {}, "runs/x/curves.png", 0.5)


@pytest.fixture
def fake_train(monkeypatch):
    calls = []

    def fake(data, out, task, model, clip, options, horizon, lookback):
        calls.append(dict(data=data, out=out, task=task, model=model, clip=clip, options=options))
        return _summary()

    monkeypatch.setattr("cnnlstm.tasks.entry.train", fake)
    return calls


def test_only_the_options_given_reach_the_library(fake_train):
    args = ["train", "vids", "--out", "runs/x", "--epochs", "3", "--bridge", "grid", "--size", "64x48",
            "--precision", "bf16", "--no-bidirectional", "--backbone-channels", "8,16"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (call,) = fake_train
    assert call["options"] == {"epochs": 3, "precision": "bf16"}
    assert call["clip"] == {"size": (64, 48)}
    assert call["model"] == ModelOptions(bridge="grid", bidirectional=False, backbone_channels=(8, 16))
    assert call["task"] == "classify"


def test_the_summary_prints_itself_with_the_run_folder(fake_train):
    result = CliRunner().invoke(main, ["train", "vids", "--out", "runs/x"])
    assert result.output.splitlines() == [
        "best val accuracy 0.5 after 3 epochs, 6 train / 2 val videos, 1.5 s",
        "skipped 0 file(s)",
        "run folder: runs/x",
        "curves: runs/x/curves.png",
    ]


def test_a_library_error_is_one_line_without_a_traceback(monkeypatch):
    def fails(*a, **k):
        raise DataError("no video in there")

    monkeypatch.setattr("cnnlstm.tasks.entry.train", fails)
    result = CliRunner().invoke(main, ["train", "vids", "--out", "runs/x"])
    assert result.exit_code == 1 and result.output == "Error: no video in there\n"


@pytest.mark.parametrize("args", [["--size", "abc"], ["--size", "0"], ["--precision", "64"], ["--epochs", "x"]])
def test_malformed_options_are_usage_errors(args, fake_train):
    result = CliRunner().invoke(main, ["train", "vids", "--out", "runs/x", *args])
    assert result.exit_code == 2 and "Traceback" not in result.output and not fake_train


def test_parsers():
    assert parse_ints("8,?,3x112") == (8, None, 3, 112)
    assert parse_size("112") == (112, 112) and parse_size("64x48") == (64, 48)
    assert given({"epochs": 3, "lr": None, "nope": 1}, TrainOptions) == {"epochs": 3}


def test_one_precision_vocabulary():
    assert [lightning_precision(p) for p in ("32", "bf16", "16", "bf16-mixed")] == [
        "32-true", "bf16-mixed", "16-mixed", "bf16-mixed",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unknown precision '8': expected one of 32, bf16, 16"):
        TrainOptions(precision="8")


@pytest.mark.parametrize(
    "text, seconds", [("90s", 90), ("15m", 900), ("1h30m", 5400), ("00:15:00", 900), ("01:00:00:00", 86400)]
)
def test_time_budgets_read_as_people_write_them(text, seconds):
    from cnnlstm.tasks.options import parse_duration

    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["soon", "0s", "-5m", ""])
def test_a_bad_time_budget_says_how_to_write_one(text):
    with pytest.raises(ValueError, match="max_time"):
        TrainOptions(max_time=text)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lr", "-1"], "Error: lr and weight_decay cannot be negative, got -1.0 and 0.0001"),
        (["--val-fraction", "1"], "Error: val_fraction is a share of the training data, 0 <= share < 1, got 1.0"),
    ],
)
def test_misuse_is_one_line_before_any_data_is_read(args, message, monkeypatch):
    from cnnlstm.tasks import entry

    monkeypatch.setattr(entry, "is_series_source", lambda data: pytest.fail("the data was looked at"))
    result = CliRunner().invoke(main, ["train", "vids", "--out", "runs/x", *args])
    assert result.exit_code == 1 and result.output == message + "\n"


@pytest.mark.parametrize(
    "option, value, low",
    [("--epochs", "0", 1), ("--epochs", "-1", 1), ("--batch-size", "0", 1), ("--clip-len", "0", 1),
     ("--ensemble", "0", 1), ("--threads", "-2", 0), ("--patience", "-1", 0)],
)  # fmt: skip
def test_a_number_out_of_range_is_refused_as_the_command_line_is_parsed(option, value, low, fake_train):
    result = CliRunner().invoke(main, ["train", "vids", "--out", "runs/x", option, value])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}': {value} is not in the range x>={low}" in result.output
    assert not fake_train  # nothing ran


@pytest.mark.parametrize("size", ["abc", "0", "3x4x5"])
def test_a_bad_frame_size_says_how_to_give_one(size, fake_train):
    result = CliRunner().invoke(main, ["train", "vids", "--out", "runs/x", "--size", size])
    assert result.exit_code == 2 and "give a frame size as 112 or 112x112" in result.output
    assert "8,16,3,112,112" not in result.output  # not the doctor's example
