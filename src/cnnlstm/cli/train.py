"""``cnnlstm train`` and ``cnnlstm anomaly fit``: parse, call the library's training entry, print the summary."""

from __future__ import annotations

import click

from ..build import PRESETS, RNN_NAMES, ModelOptions
from ..data.datasets import ClipSpec
from ..data.sampling import PADS, SAMPLINGS
from ..layers.motion import MOTIONS
from ..layers.parallel import ARRANGEMENTS
from ..tasks.options import LOWEST, PRECISIONS, SCHEDULES, VIDEO_TRAINING, TrainOptions
from ._app import anomaly, echo_lines, library_errors, main, setup_logging
from ._options import given, options_from, parse_size

__all__ = ["anomaly_fit", "train"]

MODEL_CHOICES = {"bridge": ["gap", "gmp", "grid", "flatten", "attention", "none"], "rnn": list(RNN_NAMES),
                 "head": ["last", "mean", "attention"], "motion": list(MOTIONS), "arrangement": list(ARRANGEMENTS),
                 "preset": list(PRESETS)}  # fmt: skip


def _print_summary(summary, out) -> None:
    if summary is None:  # a non-zero rank of a distributed run
        return
    lines = summary.lines()
    echo_lines([*lines[:-1], f"run folder: {out}", lines[-1]])


@main.command()
@click.argument("data")
@click.option("--out", required=True, type=click.Path(), help="The run folder, e.g. runs/NAME.")
@click.option(
    "--task",
    default="classify",
    show_default=True,
    type=click.Choice(["classify", "forecast"]),
    help="forecast: DATA is one long series (aeon:Airline, a CSV or .npy); predict the next --horizon steps.",
)
@click.option("--horizon", default=12, show_default=True, help="Forecast: steps predicted.")
@click.option("--lookback", default=24, show_default=True, help="Forecast: steps read.")
@options_from(ModelOptions, choices=MODEL_CHOICES, notes={"hidden_size": "[default: 256; series 128]"})
@options_from(ClipSpec, exclude=("mean", "std"), choices={"sampling": SAMPLINGS, "pad": PADS}, lowest={"clip_len": 1})
@options_from(
    TrainOptions,
    exclude=("progress",),
    choices={"precision": list(PRECISIONS), "schedule": list(SCHEDULES)},
    notes={
        "epochs": "(videos; series: 300, forecast: 200)",
        "val_fraction": "(series: 0)",
        "lr": "(forecast: 0.003)",
        "schedule": "(videos; series and forecast: cosine)",
        "patience": "(videos; series and forecast: 0)",
        "min_epochs": "(videos)",
        "max_time": "(series: 10m, unless --epochs is given)",
        "augment": "On for videos.",
    },
    shown={k: v for k, v in VIDEO_TRAINING.items() if not isinstance(v, bool)},
    lowest=LOWEST,
)
@library_errors
def train(data, out, task, horizon, lookback, **kw) -> None:
    """Train a CNN-LSTM on DATA.

    Videos: ROOT/CLASS/*.mp4, ROOT/train|val|test/CLASS/*, or a CSV manifest path,label[,start,end].
    Series: aeon:NAME (a UCR/UEA set aeon ships), file.npz (x, y), file.npy (+ file_labels.npy), or a
    CSV (long: id,label,features...; wide: label,v0,v1,...). Series train LSTM-FCN (an FCN beside an LSTM) on
    the whole training split unless --val-fraction is given, 300 epochs fitted into 10 minutes.
    """
    from ..tasks.entry import train as fit

    setup_logging()
    model = ModelOptions(**given(kw, ModelOptions))
    summary = fit(data, out, task, model, given(kw, ClipSpec), given(kw, TrainOptions), horizon, lookback)
    _print_summary(summary, out)


@anomaly.command("fit")
@click.argument("data")
@click.option("--out", required=True, type=click.Path(), help="The run folder.")
@options_from(
    TrainOptions,
    only=("epochs", "batch_size", "lr", "seed", "overwrite"),
    notes={"epochs": "[default: 60 videos, 15 series]", "batch_size": "[default: 16]", "lr": "[default: 3e-3]"},
    show_defaults=False,
    lowest=LOWEST,
)
@click.option(
    "--false-alarm-rate", default=0.05, show_default=True, help="Share of held-out normal clips above the threshold."
)
@click.option("--size", default="48", show_default=True, help="Video frame size, 48 or HxW.")
@click.option("--window", default=128, show_default=True, help="Series: training window length.")
@library_errors
def anomaly_fit(data, out, false_alarm_rate, size, window, **kw) -> None:
    """Learn what normal looks like from DATA: a folder of normal videos (DATA/train/normal if present), or a
    normal series (aeon:KDD-TSAD_135's training part, a CSV, a .npy)."""
    from ..tasks.anomaly import anomaly_training, fit_anomaly

    setup_logging()
    opts = anomaly_training(data, given(kw, TrainOptions))
    s = fit_anomaly(data, out, opts, window=window, false_alarm_rate=false_alarm_rate, size=parse_size(size))
    _print_summary(s, out)
