"""``cnnlstm doctor``: a table of every module's shapes, then the diagnosis with fixes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import click
from torch import nn

from ..build import RNN_NAMES, ModelOptions, model_kwargs
from ._app import echo_lines, library_errors, main
from ._options import given, options_from, parse_ints

__all__ = ["doctor", "load_target"]

UNKNOWN_SIZE = 5  # what the table's dry run puts where the input's size may vary ("?")


def load_target(target: str) -> nn.Module:
    """``path/to/model.py:factory`` → the module that ``factory()`` returns (or the module object itself)."""
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
@options_from(
    ModelOptions,
    only=("backbone", "bridge", "rnn", "hidden_size", "num_layers", "bidirectional", "head", "rnn_kernel_size"),
    choices={"rnn": list(RNN_NAMES)},
)
@click.option("--num-classes", default=10, show_default=True)
@click.option("--lengths", default=None, help="Valid lengths of a padded batch, e.g. 16,9 (finds reads of padding).")
@library_errors
def doctor(target, input_shape, layout, num_classes, lengths, **kw) -> None:
    """Check a model's shapes: a table of every module's shapes, then the diagnosis with fixes.

    TARGET is path/to/model.py:factory for your own model; without it the built-in CNNLSTM
    is built from the options.
    """
    from ..model import CNNLSTM
    from ..shapes import diagnose, explain
    from ..shapes.rules import takes_lengths

    shape = parse_ints(input_shape)
    lens = list(parse_ints(lengths)) if lengths else None
    if target:
        model = load_target(target)
    else:
        opts = model_kwargs("video", ModelOptions(**given(kw, ModelOptions)))
        model = CNNLSTM(**opts, num_classes=num_classes, input_shape=shape[1:], layout=layout)
    result = diagnose(model, shape, lengths=lens)
    known = tuple(UNKNOWN_SIZE if s is None else s for s in shape)
    table = explain(model, known, **({"lengths": lens} if lens and takes_lengths(model) else {}))
    if table.rows:  # as far as the model runs; the diagnosis below says why it stops there
        click.echo("\n".join(str(table).splitlines()[: len(table.rows) + 2]))
        click.echo()
    echo_lines([f"{type(model).__name__} on input {shape}:", str(result)])
    if not result.ok:
        sys.exit(1)
