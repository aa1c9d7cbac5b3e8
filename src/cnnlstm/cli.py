"""The ``cnnlstm`` command: a thin skin over the library. Each command parses, calls one function, prints."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

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


def _forward_params(model) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


if __name__ == "__main__":  # pragma: no cover
    main()
