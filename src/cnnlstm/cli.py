"""The ``cnnlstm`` command: a thin skin over the library. Each command parses, calls one function, prints."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__


def _parse_shape(text: str) -> tuple:
    """``"8,16,3,112,112"`` → ``(8, 16, 3, 112, 112)``; ``?`` or ``None`` marks a size that may vary."""
    out = []
    for part in text.replace("x", ",").split(","):
        part = part.strip()
        if part in ("?", "None", "none"):
            out.append(None)
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise click.BadParameter(f"{text!r}: sizes are integers separated by commas, e.g. 8,16,3,112,112") from None
    return tuple(out)


def _load_target(target: str):
    """``path/to/model.py:factory`` → the module that ``factory()`` returns (or the module object itself)."""
    from torch import nn

    path, _, attr = target.partition(":")
    file = Path(path)
    if not file.is_file():
        raise click.BadParameter(f"{path!r} is not a file; give path/to/model.py:factory")
    spec = importlib.util.spec_from_file_location(file.stem, file)
    if spec is None or spec.loader is None:
        raise click.BadParameter(f"cannot import {path!r} as Python")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(file.stem, mod)
    spec.loader.exec_module(mod)
    if not attr:
        found = [k for k, v in vars(mod).items() if callable(v) and not k.startswith("_") and k != "nn"]
        raise click.BadParameter(f"name the factory in {path!r}: {path}:NAME (callables there: {', '.join(found)})")
    if not hasattr(mod, attr):
        raise click.BadParameter(f"{path!r} has no {attr!r}")
    obj = getattr(mod, attr)
    model = obj if isinstance(obj, nn.Module) else obj()
    if not isinstance(model, nn.Module):
        raise click.BadParameter(f"{target} returned {type(model).__name__}, not an nn.Module")
    return model


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cnnlstm")
def main() -> None:
    """cnnlstm: CNN -> LSTM/GRU models that work on their shapes."""


def _inference_precision(help: str = "bf16: bfloat16 inference (opt-in; fast on CPUs with AVX512-BF16/AMX).") -> Any:
    """The ``--precision 32|bf16`` option of the commands that run a trained model."""
    return click.option("--precision", default="32", show_default=True, type=click.Choice(["32", "bf16"]), help=help)


@main.command()
@click.argument("target", required=False)
@click.option(
    "--input",
    "input_shape",
    default="8,16,3,112,112",
    show_default=True,
    help="Full input shape, batch first (N,T,C,H,W for clips); '?' for a size that may vary.",
)
@click.option("--layout", default="NTCHW", show_default=True, help="Input layout of the built-in model.")
@click.option("--backbone", default=None, help="Built-in model: small | conv1d | torchvision:NAME | timm:NAME.")
@click.option("--bridge", default=None, help="Built-in model: gap | gmp | grid | flatten | attention | spatial | none.")
@click.option("--rnn", default="lstm", show_default=True, type=click.Choice(["lstm", "gru"]))
@click.option("--hidden-size", default=256, show_default=True)
@click.option("--num-layers", default=1, show_default=True)
@click.option("--bidirectional", is_flag=True)
@click.option("--head", default="last", show_default=True)
@click.option("--num-classes", default=10, show_default=True)
@click.option("--lengths", default=None, help="Valid lengths of a padded batch, e.g. 16,9 (finds reads of padding).")
def doctor(
    target,
    input_shape,
    layout,
    backbone,
    bridge,
    rnn,
    hidden_size,
    num_layers,
    bidirectional,
    head,
    num_classes,
    lengths,
) -> None:
    """Check a model's shapes: a table of every module's shapes, then the diagnosis with fixes.

    TARGET is path/to/model.py:factory for your own model; without it the built-in CNNLSTM
    is built from the options.
    """
    from .errors import CnnlstmError
    from .model import CNNLSTM
    from .shapes import diagnose, explain

    shape = _parse_shape(input_shape)
    lens = list(_parse_shape(lengths)) if lengths else None
    try:
        if target:
            model = _load_target(target)
        else:
            model = CNNLSTM(
                backbone,
                bridge,
                rnn=rnn,
                hidden_size=hidden_size,
                num_layers=num_layers,
                bidirectional=bidirectional,
                head=head,
                num_classes=num_classes,
                input_shape=shape[1:],
                layout=layout,
            )
    except CnnlstmError as e:
        raise click.ClickException(str(e)) from None
    name = type(model).__name__
    result = diagnose(model, shape, lengths=lens)
    if result.ok:
        click.echo(
            explain(
                model,
                tuple(5 if s is None else s for s in shape),
                **({"lengths": lens} if lens and "lengths" in _forward_params(model) else {}),
            )
        )
        click.echo()
    click.echo(f"{name} on input {shape}:")
    click.echo(str(result))
    if not result.ok:
        sys.exit(1)


def _setup_logging() -> None:
    """Skipped files and other warnings of cnnlstm reach the terminal; Lightning's chatter does not."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    log = logging.getLogger("cnnlstm")
    if not log.handlers:
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _size(text: str) -> tuple[int, int]:
    parts = _parse_shape(text)
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or None in parts:
        raise click.BadParameter(f"{text!r}: give a frame size as 112 or 112x112 (H x W)")
    return parts


def _model_options(
    backbone, bridge, rnn, hidden_size, num_layers, bidirectional, head, dropout, backbone_channels, grid_k
) -> dict:
    opts = {
        "rnn": rnn,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "bidirectional": bidirectional,
        "head": head,
        "dropout": dropout,
    }
    if backbone:
        opts["backbone"] = backbone
    if bridge:
        opts["bridge"] = bridge
    if backbone_channels:
        opts["backbone_options"] = {"channels": tuple(_parse_shape(backbone_channels))}
    if grid_k and (bridge or "gap") == "grid":
        opts["bridge_options"] = {"k": grid_k}
    return opts


def model_options(f):
    """The options that build the model, shared by ``train`` and ``demo``."""
    for opt in reversed(
        [
            click.option("--backbone", default=None, help="small (default) | torchvision:NAME | timm:NAME."),
            click.option(
                "--backbone-channels", default=None, help="Channels of the small backbone's blocks, e.g. 16,32,64."
            ),
            click.option("--bridge", default=None, help="gap (default) | gmp | grid | flatten | attention."),
            click.option("--grid-k", default=2, show_default=True, help="Cells per side of the grid bridge."),
            click.option("--rnn", default="lstm", show_default=True, type=click.Choice(["lstm", "gru"])),
            click.option("--hidden-size", default=256, show_default=True),
            click.option("--num-layers", default=1, show_default=True),
            click.option(
                "--bidirectional/--no-bidirectional",
                default=False,
                help="A bidirectional RNN (series default: on, unless --causal).",
            ),
            click.option("--head", default="last", show_default=True, type=click.Choice(["last", "mean", "attention"])),
            click.option("--dropout", default=0.0, show_default=True),
            click.option("--kernel-size", default=7, show_default=True, help="Series: conv1d kernel size."),
            click.option(
                "--causal", is_flag=True, help="Series: a model that can stream (causal convolutions, no pooling)."
            ),
            click.option(
                "--pool",
                default=None,
                type=click.IntRange(min=1),
                help="Series: max-pool time by this factor before the RNN (default 4).",
            ),
        ]
    ):
        f = opt(f)
    return f


def clip_options(f):
    for opt in reversed(
        [
            click.option("--clip-len", default=16, show_default=True, help="Frames per clip (T)."),
            click.option("--size", default="112", show_default=True, help="Frame size, 112 or HxW."),
            click.option("--channels", default=3, show_default=True, type=click.Choice(["1", "3"]), help="1: gray."),
            click.option(
                "--sampling", default="uniform", show_default=True, type=click.Choice(["uniform", "random", "dense"])
            ),
            click.option("--stride", default=1, show_default=True, help="Frame step of random/dense clips."),
            click.option(
                "--pad",
                default="repeat",
                show_default=True,
                type=click.Choice(["repeat", "lengths"]),
                help="Videos shorter than T: repeat the last frame, or pad and pass lengths.",
            ),
        ]
    ):
        f = opt(f)
    return f


def fit_options(f):
    for opt in reversed(
        [
            click.option("--epochs", default=10, show_default=True, help="Series: 300 unless given."),
            click.option("--batch-size", default=8, show_default=True),
            click.option("--lr", default=1e-3, show_default=True),
            click.option("--weight-decay", default=1e-4, show_default=True),
            click.option("--workers", default=2, show_default=True, help="DataLoader processes decoding video."),
            click.option("--seed", default=0, show_default=True),
            click.option("--val-fraction", default=0.2, show_default=True, help="Held out when there is no val split."),
            click.option("--augment", is_flag=True, help="Random resized crops (the same for all frames of a clip)."),
            click.option("--flip", is_flag=True, help="Random horizontal flips (changes left/right motion!)."),
            click.option("--accelerator", default="auto", show_default=True, help="Lightning: cpu | gpu | auto."),
            click.option("--devices", default="auto", show_default=True, help="Lightning: a count, a list, or auto."),
            click.option("--strategy", default="auto", show_default=True, help="Lightning: ddp, ddp_spawn, auto, ..."),
            click.option("--num-nodes", default=1, show_default=True),
            click.option(
                "--precision", default="32-true", show_default=True, help="Lightning: 32-true, bf16-mixed, ..."
            ),
        ]
    ):
        f = opt(f)
    return f


def _train(data, out, resume, kw, overwrite=False) -> dict:
    from .data.datasets import ClipSpec
    from .data.series import is_series_source
    from .train.fit import TrainOptions, fit_videos

    spec = ClipSpec(
        clip_len=kw["clip_len"],
        size=_size(kw["size"]),
        channels=int(kw["channels"]),
        sampling=kw["sampling"],
        stride=kw["stride"],
        pad=kw["pad"],
    )
    devices = kw["devices"]
    devices = int(devices) if str(devices).isdigit() else devices
    opts = TrainOptions(
        epochs=kw["epochs"],
        batch_size=kw["batch_size"],
        lr=kw["lr"],
        weight_decay=kw["weight_decay"],
        workers=kw["workers"],
        seed=kw["seed"],
        val_fraction=kw["val_fraction"],
        augment=kw["augment"],
        flip=kw["flip"],
        devices=devices,
        strategy=kw["strategy"],
        num_nodes=kw["num_nodes"],
        precision=kw["precision"],
        accelerator=kw["accelerator"],
        resume=resume,
        overwrite=overwrite,
    )
    if is_series_source(data):
        return _train_series(data, out, opts, kw)
    if Path(data).is_file() and Path(data).suffix.lower() != ".csv":
        raise click.BadParameter(
            f"{data!r}: cannot train on a {Path(data).suffix or 'extension-less'} file (videos: a folder or a CSV "
            "manifest; series: aeon:NAME, .npz, .npy or .csv)",
            param_hint="DATA",
        )
    if not Path(data).exists():
        raise click.BadParameter(
            f"{data!r} does not exist (videos: a folder or a CSV manifest; series: aeon:NAME, .npz, .npy or .csv)",
            param_hint="DATA",
        )
    model = _model_options(
        kw["backbone"],
        kw["bridge"],
        kw["rnn"],
        kw["hidden_size"],
        kw["num_layers"],
        kw["bidirectional"],
        kw["head"],
        kw["dropout"],
        kw["backbone_channels"],
        kw["grid_k"],
    )
    return fit_videos(data, out, model, spec, opts)


def _train_series(data, out, opts, kw) -> dict:
    """Series keep the series model's defaults except where an option was given on the command line."""
    from .train.fit import SERIES_EPOCHS, SERIES_MODEL, fit_series

    ctx = click.get_current_context()
    given = {k for k in kw if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
    names = ("rnn", "hidden_size", "num_layers", "bidirectional", "head", "dropout", "bridge", "backbone")
    model = {k: kw[k] for k in names if k in given}
    backbone = dict(SERIES_MODEL["backbone_options"])
    if "backbone_channels" in given:
        backbone["channels"] = tuple(_parse_shape(kw["backbone_channels"]))
    if "kernel_size" in given:
        backbone["kernel_size"] = kw["kernel_size"]
    if "pool" in given:
        backbone["pool"] = kw["pool"]
    if kw.get("causal"):  # a model that can stream: causal convolutions, one RNN step per series step, one way
        backbone["causal"] = True
        if "pool" not in given:
            backbone["pool"] = 1
        model.setdefault("bidirectional", False)
        model.setdefault("head", "last")
        if model["bidirectional"] or backbone["pool"] > 1:
            click.echo("note: --bidirectional or --pool > 1 makes a --causal model that cannot stream", err=True)
    model["backbone_options"] = backbone
    if "epochs" not in given:
        opts.epochs = SERIES_EPOCHS  # small UCR-style training sets need many passes
    if "val_fraction" not in given:
        opts.val_fraction = 0.0  # the series habit: the whole training split trains, the last epoch is kept
    return fit_series(data, out, model, opts)


def _print_summary(summary: dict, out) -> None:
    if not summary:  # a non-zero rank of a distributed run
        return
    what = "videos" if "train_videos" in summary else "series"
    best = f"best val accuracy {summary['best_val_acc']}" if summary["best_val_acc"] is not None else "trained"
    click.echo(
        f"{best} after {summary['epochs']} epochs, "
        f"{summary[f'train_{what}']} train / {summary[f'val_{what}']} val {what}, {summary['seconds']} s"
    )
    skipped = summary["skipped"]
    click.echo(f"skipped {len(skipped)} file(s)" + (":" if skipped else ""))
    for s in skipped:
        click.echo(f"  {s['path']}: {s['reason']}")
    click.echo(f"run folder: {out}\ncurves: {summary['curves']}")


@main.command()
@click.argument("data")
@click.option("--out", required=True, type=click.Path(), help="The run folder, e.g. runs/NAME.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/last.ckpt.")
@click.option("--overwrite", is_flag=True, help="Start again in an OUT that already holds a run.")
@click.option(
    "--task",
    default="classify",
    show_default=True,
    type=click.Choice(["classify", "forecast"]),
    help="forecast: DATA is one long series (aeon:Airline, a CSV or .npy); predict the next --horizon steps.",
)
@click.option("--horizon", default=12, show_default=True, help="Forecast: steps predicted.")
@click.option("--lookback", default=24, show_default=True, help="Forecast: steps read.")
@model_options
@clip_options
@fit_options
def train(data, out, resume, overwrite, task, horizon, lookback, **kw) -> None:
    """Train a CNN-LSTM classifier on DATA.

    Videos: ROOT/CLASS/*.mp4, ROOT/train|val|test/CLASS/*, or a CSV manifest path,label[,start,end].
    Series: aeon:NAME (a UCR/UEA set aeon ships), file.npz (x, y), file.npy (+ file_labels.npy), or a
    CSV (long: id,label,features...; wide: label,v0,v1,...). Series use a conv1d backbone and train on
    the whole training split unless --val-fraction is given.
    """
    from .errors import CnnlstmError

    _setup_logging()
    try:
        if task == "forecast":
            from .train.fit import TrainOptions
            from .train.forecast import fit_forecast

            opts = TrainOptions(
                epochs=kw["epochs"],
                batch_size=kw["batch_size"],
                lr=kw["lr"],
                seed=kw["seed"],
                resume=resume,
                overwrite=overwrite,
                weight_decay=kw["weight_decay"],
            )
            summary = fit_forecast(data, out, horizon, lookback, options=opts)
            click.echo(
                f"trained a {horizon}-step forecaster on {summary['train_series']} windows in "
                f"{summary['seconds']} s\nrun folder: {out}\ncurves: {summary['curves']}"
            )
            return
        summary = _train(data, out, resume, kw, overwrite)
    except CnnlstmError as e:
        raise click.ClickException(str(e)) from None
    _print_summary(summary, out)


def _print_eval(result: dict) -> None:
    click.echo(
        f"accuracy {result['accuracy']:.4f}   macro-F1 {result['macro_f1']:.4f}   "
        f"({result['videos']} items: {result['subset']})"
    )
    width = max(len(r["class"]) for r in result["per_class"])
    click.echo(f"{'class'.ljust(width)}  precision  recall     f1  support")
    for r in result["per_class"]:
        click.echo(
            f"{r['class'].ljust(width)}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}  {r['support']:7d}"
        )
    click.echo(f"skipped {len(result['skipped'])} file(s)" + (":" if result["skipped"] else ""))
    for s in result["skipped"]:
        click.echo(f"  {s['path']}: {s['reason']}")
    click.echo(f"confusion matrix: {result['confusion_png']}")


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.argument("data")
@click.option("--split", default="test", show_default=True, help="With split folders, which one.")
@click.option(
    "--sampling",
    default=None,
    type=click.Choice(["uniform", "random", "dense"]),
    help="Override the run's sampling (dense: average over windows).",
)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--workers", default=0, show_default=True)
@click.option(
    "--all",
    "all_videos",
    is_flag=True,
    help="Without split folders, evaluate every video (default: those the run held out).",
)
@_inference_precision()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable results.")
def evaluate(run, data, split, sampling, batch_size, workers, all_videos, precision, as_json) -> None:
    """Accuracy, macro-F1 and a per-class table of RUN on labelled videos DATA; writes a confusion-matrix PNG."""
    import json

    from .errors import CnnlstmError
    from .train.evaluate import evaluate as run_evaluate

    _setup_logging()
    try:
        result = run_evaluate(
            run, data, split, sampling, batch_size, workers, all_videos=all_videos, precision=precision
        )
    except CnnlstmError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_eval(result)


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.argument("videos", nargs=-1, required=True)
@click.option("--top-k", default=3, show_default=True)
@click.option("--sampling", default=None, type=click.Choice(["uniform", "random", "dense"]))
@_inference_precision()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable results.")
def predict(run, videos, top_k, sampling, precision, as_json) -> None:
    """Top-k labels with probabilities for each of VIDEOS, sampled as RUN was trained."""
    import json

    from .errors import CnnlstmError
    from .train.evaluate import predict as run_predict

    _setup_logging()
    try:
        results = run_predict(run, videos, top_k, sampling, precision)
    except CnnlstmError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" in r:
                click.echo(f"{r['path']}: skipped: {r['error']}")
            else:
                click.echo(f"{r['path']}: " + ", ".join(f"{t['label']} {t['prob']:.3f}" for t in r["top"]))
    if any("error" in r for r in results):
        sys.exit(1)


@main.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(), help="Run folder.")
@click.option(
    "--data",
    default="data/moving-digits",
    show_default=True,
    type=click.Path(),
    help="Where the demo videos are written (kept for the next run).",
)
@click.option("--epochs", default=None, type=int, help="Training epochs (default 8).")
@click.option("--seed", default=0, show_default=True)
@click.option("--compare-bridges", is_flag=True, help="Train once per bridge (gap, grid, flatten, attention).")
@_inference_precision("bf16: train with bfloat16 autocast and test in bfloat16 (opt-in; its accuracy cost shows).")
def demo(out, data, epochs, seed, compare_bridges, precision) -> None:
    """Make "moving digits" videos from scikit-learn's digits, train a CNN-LSTM on them, test it."""
    from .errors import CnnlstmError
    from .train import demo as d

    _setup_logging()
    bar = None

    def data_progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            click.echo(f"writing {total} moving-digit videos (H.264 MP4) to {data}")
            bar = click.progressbar(length=total, label="videos")
            bar.__enter__()
        bar.update(1)
        if done == total:
            bar.__exit__(None, None, None)

    try:
        d.ensure_data(data, data_progress)
        if compare_bridges:
            rows = d.compare_bridges(out, data, epochs=epochs, seed=seed, precision=precision)
            click.echo(f"{'bridge':<10} {'test acc':>8} {'params':>9} {'train s':>8}")
            for r in rows:
                click.echo(f"{r['bridge']:<10} {r['test_accuracy']:8.3f} {r['params']:9,d} {r['train_seconds']:8.1f}")
            click.echo(f"table: {out}/bridges.json")
            return
        r = d.run_demo(out, data, epochs, seed, precision=precision)
    except CnnlstmError as e:
        raise click.ClickException(str(e)) from None
    ev = r["eval"]
    click.echo(
        f"test accuracy {r['test_accuracy']:.3f} (macro-F1 {r['macro_f1']:.3f}) on {ev['videos']} held-out "
        f"videos, {r['seconds']:.0f} s in all"
    )
    click.echo(f"training curves: {r['train']['curves']}")
    click.echo(f"confusion matrix: {ev['confusion_png']}")
    click.echo(f"run folder: {out}  (try: cnnlstm predict {out} {data}/test/up-left/0000.mp4)")


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.argument("video", type=click.Path(exists=True, dir_okay=False))
@click.option("--stride", default=1, show_default=True, help="Feed every STRIDE-th frame.")
@click.option("--every", default=25, show_default=True, help="Print the running prediction every K fed frames.")
@click.option("--plot", default=None, type=click.Path(), help="Timeline PNG (default: RUN/stream-VIDEO.png).")
@_inference_precision()
def stream(run, video, stride, every, plot, precision) -> None:
    """Stream VIDEO frame by frame through RUN's model, carrying the RNN state; plot class probabilities over time."""
    from pathlib import Path

    from .data.video import probe
    from .errors import CnnlstmError
    from .runs import load_run
    from .streaming import stream_video
    from .train.plots import plot_timeline

    try:
        r = load_run(run, precision)
        info = probe(video)

        def show(i: int, p) -> None:
            k = int(p.argmax())
            click.echo(f"frame {i:6d} ({i / info.fps:7.2f} s): {r.classes[k]} {float(p[k]):.3f}")

        result = stream_video(r, video, stride, every, show)
    except CnnlstmError as e:
        raise click.ClickException(str(e)) from None
    png = Path(plot) if plot else Path(run) / f"stream-{Path(video).stem}.png"
    plot_timeline(result["frames"], result["probs"], result["classes"], png, title=str(video), fps=info.fps)
    last = result["probs"][-1]
    k = int(last.argmax())
    click.echo(f"{len(result['frames'])} frames streamed; final: {r.classes[k]} {float(last[k]):.3f}")
    click.echo(f"timeline: {png}")


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", default="onnx", show_default=True, type=click.Choice(["onnx", "torchscript"]))
@click.option("--int8", is_flag=True, help="Also quantize to int8 (ONNX) and report size, latency and agreement.")
@click.option("--out", default=None, type=click.Path(), help="Folder for the files (default: RUN/export).")
@click.option("--sample", default=32, show_default=True, help="Clips of the run's data for the int8 agreement.")
def export(run, fmt, int8, out, sample) -> None:
    """Export RUN's model (whole clip, and the streaming step where the model can stream), verified against PyTorch."""
    from pathlib import Path

    from .errors import CnnlstmError
    from .export import export_onnx, export_torchscript, int8_report
    from .runs import load_run
    from .streaming import check_streamable

    if int8 and fmt != "onnx":
        raise click.ClickException("--int8 quantizes ONNX graphs: use --format onnx")
    try:
        r = load_run(run)
        folder = Path(out) if out else Path(run) / "export"
        try:
            check_streamable(r.model)
            streams = r.model.kind == "clip"
        except CnnlstmError as why:
            streams = False
            click.echo(f"no streaming-step graph: {why}")
        ext = "onnx" if fmt == "onnx" else "pt"
        do = export_onnx if fmt == "onnx" else export_torchscript
        reports = [do(r.model, folder / f"model.{ext}", kind="clip")]
        if streams:
            reports.append(do(r.model, folder / f"step.{ext}", kind="step"))
        for rep in reports:
            click.echo(str(rep))
        if int8:
            clips, source = _sample_clips(r, sample)
            q = int8_report(r.model, reports[0].path, reports[1].path if streams else None, clips, folder)
            click.echo(
                f"int8 (dynamic quantization), top-1 agreement with float32 on {q['sample_clips']} {source} "
                f"clips: {q['top1_agreement']:.3f}"
            )
            click.echo(
                f"  clip graph: {q['clip_mb']['fp32']:.2f} MB -> {q['clip_mb']['int8']:.2f} MB, "
                f"{q['clip_ms']['fp32']:.1f} ms -> {q['clip_ms']['int8']:.1f} ms per clip"
            )
            if "frame_ms" in q:
                click.echo(
                    f"  step graph: {q['step_mb']['fp32']:.2f} MB -> {q['step_mb']['int8']:.2f} MB, "
                    f"{q['frame_ms']['fp32']:.2f} ms -> {q['frame_ms']['int8']:.2f} ms per streamed frame"
                )
    except CnnlstmError as e:
        raise click.ClickException(str(e)) from None


def _sample_clips(r, n: int):
    """Up to ``n`` clips of the run's own data (its held-out videos first); random clips if it is gone."""
    import json

    import torch

    from .data.datasets import VideoDataset, collate_clips, find_videos
    from .errors import CnnlstmError

    info = json.loads((r.path / "run.json").read_text()) if (r.path / "run.json").is_file() else {}
    try:
        items, classes, _ = find_videos(info["data"], "test" if (Path(info["data"]) / "test").is_dir() else None)
        ds = VideoDataset(items[:: max(1, len(items) // n)][:n], classes, spec=r.spec, warn=False)
        batch = collate_clips([ds[i] for i in range(len(ds))])
        if batch["video"] is not None:
            return batch["video"], "real"
    except (KeyError, CnnlstmError, OSError):
        pass
    shape = [s for s in r.model.config.input_shape]
    return torch.randn(n, *[16 if s is None else s for s in shape]), "random"


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.argument("series", required=False)
@click.option("--season", default=1, show_default=True, help="Season length of the naive forecast MASE scales by.")
@click.option(
    "--plot", default=None, type=click.Path(), help="PNG of history, forecast and truth (default RUN/forecast.png)."
)
def forecast(run, series, season, plot) -> None:
    """Forecast the steps after RUN's training part of SERIES (default: the series it trained on); MASE when known."""
    from .errors import CnnlstmError
    from .train.forecast import forecast as run_forecast

    try:
        r = run_forecast(run, series, season, plot)
    except CnnlstmError as e:
        raise click.ClickException(str(e)) from None
    for j, name in enumerate(r["names"]):
        click.echo(f"{name}: " + " ".join(f"{v:.1f}" for v in r["forecast"][:, j]))
    if r["mase"] is not None:
        click.echo(f"MASE {r['mase']:.3f} (against the seasonal naive forecast, season {season})")
    click.echo(f"plot: {r['png']}")


@main.group()
def anomaly() -> None:
    """Anomaly detection: learn normal videos or series (fit), then score new ones (score)."""


@anomaly.command("fit")
@click.argument("data")
@click.option("--out", required=True, type=click.Path(), help="The run folder.")
@click.option("--epochs", default=None, type=int, help="Default: 60 for videos, 15 for a series.")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--lr", default=3e-3, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--false-alarm-rate",
    default=0.05,
    show_default=True,
    help="Share of held-out normal clips allowed above the threshold.",
)
@click.option("--size", default="48", show_default=True, help="Video frame size, 48 or HxW.")
@click.option("--window", default=128, show_default=True, help="Series: training window length.")
@click.option("--overwrite", is_flag=True)
def anomaly_fit(data, out, epochs, batch_size, lr, seed, false_alarm_rate, size, window, overwrite) -> None:
    """Learn what normal looks like from DATA: a folder of normal videos (DATA/train/normal if present), or a
    normal series (aeon:KDD-TSAD_135's training part, a CSV, a .npy)."""
    from .errors import CnnlstmError
    from .train.anomaly import fit_anomaly
    from .train.fit import TrainOptions

    _setup_logging()
    try:
        from .train.anomaly import default_epochs

        if epochs is None:
            epochs = default_epochs(data)
        opts = TrainOptions(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, overwrite=overwrite)
        s = fit_anomaly(data, out, opts, window=window, false_alarm_rate=false_alarm_rate, size=_size(size))
    except CnnlstmError as e:
        raise click.ClickException(str(e)) from None
    click.echo(
        f"learnt {s['train_series']} normal {s['kind']} sequences in {s['seconds']} s; threshold "
        f"{s['threshold']:.3f} from {s['val_series']} held-out normal ones (false-alarm rate {false_alarm_rate})"
    )
    click.echo(f"run folder: {out}")


@anomaly.command("score")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.argument("data")
@click.option("--out", default=None, type=click.Path(), help="Folder for the timelines (default RUN/scores).")
@click.option("--json", "as_json", is_flag=True)
def anomaly_score(run, data, out, as_json) -> None:
    """Score DATA with RUN: per-clip scores and flags (videos; normal/ and anomaly/ subfolders give labels) or
    per-step scores (a series; an is_anomaly column gives labels); AUROC and precision/recall with labels."""
    import json

    from .errors import CnnlstmError
    from .train.anomaly import score_anomaly

    _setup_logging()
    try:
        r = score_anomaly(run, data, out)
    except CnnlstmError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(
            json.dumps(
                {k: v for k, v in r.items() if k != "clips"}
                | {"clips": [{k: v for k, v in c.items() if k != "z"} for c in r.get("clips", [])]},
                indent=2,
            )
        )
        return
    for c in r.get("clips", []):
        flag = "ANOMALY" if c["flag"] else "normal"
        click.echo(f"{c['score']:8.3f}  {flag:<7}  {c['path']}")
    if "steps" in r:
        click.echo(f"{r['steps']} steps scored; highest at step {r['max_step']}")
    if "auroc" in r:
        click.echo(
            f"AUROC {r['auroc']:.3f}; at the threshold {r['threshold']:.3f}: precision {r['precision']:.3f}, "
            f"recall {r['recall']:.3f}" + (f"; true region ranks {r['region_rank']}" if "region_rank" in r else "")
        )
    click.echo(f"timeline: {r['png']}")


def _forward_params(model) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def run() -> None:
    """The ``cnnlstm`` console script: tune the process (allocator, huge pages; see ``cnnlstm._fast.alloc``), then
    the commands."""
    from cnnlstm._fast.alloc import tune_command_process

    tune_command_process()
    main()


if __name__ == "__main__":  # pragma: no cover
    run()
