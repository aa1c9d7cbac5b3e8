"""The commands that run a trained run folder: evaluate, predict, stream, forecast, anomaly score; and demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..data.sampling import SAMPLINGS
from ._app import anomaly, echo_lines, library_errors, main, setup_logging

__all__ = ["anomaly_score", "demo", "evaluate", "forecast", "predict", "stream"]

RUN = click.argument("run", type=click.Path(exists=True, file_okay=False))
AS_JSON = click.option("--json", "as_json", is_flag=True, help="Print machine-readable results.")


def precision_option(
    help: str = "bf16: bfloat16 inference (opt-in; fast on CPUs with AVX512-BF16/AMX).",
) -> click.Option:
    """``--precision 32|bf16``, the same words as ``train --precision``."""
    return click.option("--precision", default="32", show_default=True, type=click.Choice(["32", "bf16"]), help=help)


def runtime_options(f):
    """``--runtime torch|onnxruntime|openvino``, ``--precision auto|32|fp32|bf16|int8`` and ``--export DIR``: run the
    PyTorch model or the run's exported graph (``cnnlstm export``)."""
    f = click.option(
        "--export",
        "export_dir",
        default=None,
        type=click.Path(exists=True, file_okay=False),
        help="The export folder for --runtime (default: RUN/export).",
    )(f)
    f = click.option(
        "--precision",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", "32", "fp32", "bf16", "int8"]),
        help="auto: bf16 where the CPU computes it natively (AVX512-BF16/AMX; torch and OpenVINO), else fp32 "
        "(its accuracy cost, measured on 9 runs: none); 32 (= fp32): float32; bf16: bfloat16; int8: the exported "
        "int8 graph (with --runtime onnxruntime|openvino).",
    )(f)
    return click.option(
        "--runtime",
        default="torch",
        show_default=True,
        type=click.Choice(["torch", "onnxruntime", "openvino"]),
        help="Run the PyTorch model, or its exported graph in ONNX Runtime or OpenVINO (cnnlstm export RUN "
        "--runtime ...).",
    )(f)


@main.command()
@RUN
@click.argument("data")
@click.option("--split", default="test", show_default=True, help="With split folders, which one.")
@click.option(
    "--sampling",
    default=None,
    type=click.Choice(SAMPLINGS),
    help="Override the run's sampling (dense: average over windows).",
)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--workers", default=0, show_default=True)
@click.option(
    "--all",
    "all_videos",
    is_flag=True,
    help="Without split folders, evaluate every video, training ones included (default: those the run held out); "
    "writes confusion-all.png beside the held-out confusion.png.",
)
@runtime_options
@AS_JSON
@library_errors
def evaluate(run, data, split, sampling, batch_size, workers, all_videos, runtime, precision, export_dir, as_json):
    """Accuracy, macro-F1 and a per-class table of RUN on labelled videos DATA; writes a confusion-matrix PNG
    (RUN/confusion.png; with --all, RUN/confusion-all.png)."""
    from ..apps.evaluate import evaluate as run_evaluate

    setup_logging()
    result = run_evaluate(
        run,
        data,
        split,
        sampling,
        batch_size,
        workers,
        all_videos=all_videos,
        precision=precision,
        runtime=runtime,
        export=export_dir,
    )
    click.echo(json.dumps(result.to_dict(), indent=2)) if as_json else echo_lines(result.lines())


@main.command()
@RUN
@click.argument("videos", nargs=-1, required=True)
@click.option("--top-k", default=3, show_default=True)
@click.option("--sampling", default=None, type=click.Choice(SAMPLINGS))
@runtime_options
@AS_JSON
@library_errors
def predict(run, videos, top_k, sampling, runtime, precision, export_dir, as_json) -> None:
    """Top-k labels with probabilities for each of VIDEOS, sampled as RUN was trained."""
    from ..apps.predict import predict as run_predict
    from ..apps.predict import prediction_lines
    from ..export.runtime import chosen_precision

    setup_logging()
    results = run_predict(run, videos, top_k, sampling, precision, runtime, export_dir)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        echo_lines(
            prediction_lines(results)
            # which runtime and precision gave the predictions (none when every video failed)
            + [f"ran on: {runtime} {_shown(runtime, chosen_precision(runtime, precision))}"]
            * any("error" not in r for r in results)
        )
    if any("error" in r for r in results):
        sys.exit(1)


def _shown(runtime: str, precision: str) -> str:
    """A precision as ``ran on:`` names it: ``32`` in torch (as ``train --precision``), ``fp32`` in a runtime."""
    return "fp32" if precision == "32" and runtime != "torch" else precision


@main.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(), help="Run folder.")
@click.option(
    "--data",
    default="data/moving-digits",
    show_default=True,
    type=click.Path(),
    help="Where the demo videos are written (kept for the next run).",
)
@click.option("--epochs", default=None, type=int, help="Training epochs at most (default 10).")
@click.option("--seed", default=0, show_default=True)
@click.option("--compare-bridges", is_flag=True, help="Train once per bridge (gap, grid, flatten, attention).")
@precision_option("bf16: train with bfloat16 autocast and test in bfloat16 (opt-in; its accuracy cost shows).")
@library_errors
def demo(out, data, epochs, seed, compare_bridges, precision) -> None:
    """Make "moving digits" videos from scikit-learn's digits, train a CNN-LSTM on them, test it."""
    from ..apps import demo as d

    setup_logging()
    if not d.has_data(data):
        from tqdm import tqdm

        click.echo(f"writing the moving-digit videos (H.264 MP4) to {data}")
        with tqdm(desc="videos", unit="video") as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(1)

            d.ensure_data(data, progress)
    if compare_bridges:
        rows = d.compare_bridges(out, data, epochs=epochs, seed=seed, precision=precision)
        echo_lines(d.bridge_lines(rows, out))
        return
    echo_lines(d.demo_lines(d.run_demo(out, data, epochs, seed, precision=precision), out, data))


@main.command()
@RUN
@click.argument("video", type=click.Path(exists=True, dir_okay=False))
@click.option("--stride", default=1, show_default=True, help="Feed every STRIDE-th frame.")
@click.option("--every", default=25, show_default=True, help="Print the running prediction every K fed frames.")
@click.option("--plot", default=None, type=click.Path(), help="Timeline PNG (default: RUN/stream-VIDEO.png).")
@runtime_options
@library_errors
def stream(run, video, stride, every, plot, runtime, precision, export_dir) -> None:
    """Stream VIDEO frame by frame through RUN's model, carrying the RNN state; plot class probabilities over time."""
    from ..apps.plots import plot_timeline
    from ..apps.stream import check_streams_video, stream_video
    from ..data.video import probe
    from ..export.runtime import load_for_runtime

    r = load_for_runtime(run, runtime, precision, export_dir)
    check_streams_video(r)
    info = probe(video)

    def show(i: int, p) -> None:
        k = int(p.argmax())
        click.echo(f"frame {i:6d} ({i / info.fps:7.2f} s): {r.classes[k]} {float(p[k]):.3f}")

    result = stream_video(r, video, stride, every, show)
    png = Path(plot) if plot else Path(run) / f"stream-{Path(video).stem}.png"
    plot_timeline(result["frames"], result["probs"], result["classes"], png, title=str(video), fps=info.fps)
    last = result["probs"][-1]
    k = int(last.argmax())
    echo_lines(
        [
            f"{len(result['frames'])} frames streamed; final: {r.classes[k]} {float(last[k]):.3f}",
            f"ran on: {result['runtime']}",
            f"timeline: {png}",
        ]
    )


@main.command()
@RUN
@click.argument("series", required=False)
@click.option("--season", default=1, show_default=True, help="Season length of the naive forecast MASE scales by.")
@click.option(
    "--plot", default=None, type=click.Path(), help="PNG of history, forecast and truth (default RUN/forecast.png)."
)
@library_errors
def forecast(run, series, season, plot) -> None:
    """Forecast the steps after RUN's training part of SERIES (default: the series it trained on); MASE when known."""
    from ..apps.forecast import forecast as run_forecast
    from ..apps.forecast import forecast_lines

    echo_lines(forecast_lines(run_forecast(run, series, season, plot), season))


@anomaly.command("score")
@RUN
@click.argument("data")
@click.option("--out", default=None, type=click.Path(), help="Folder for the timelines (default RUN/scores).")
@AS_JSON
@library_errors
def anomaly_score(run, data, out, as_json) -> None:
    """Score DATA with RUN: per-clip scores and flags (videos; normal/ and anomaly/ subfolders give labels) or
    per-step scores (a series; an is_anomaly column gives labels); AUROC and precision/recall with labels."""
    from ..apps.anomaly import score_anomaly, score_lines

    setup_logging()
    r = score_anomaly(run, data, out)
    if as_json:
        clips = [{k: v for k, v in c.items() if k != "z"} for c in r.get("clips", [])]
        click.echo(json.dumps({k: v for k, v in r.items() if k != "clips"} | {"clips": clips}, indent=2))
        return
    echo_lines(score_lines(r))
