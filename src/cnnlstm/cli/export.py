"""``cnnlstm export``: the run's graphs, verified against PyTorch, int8 on request, and what serving them needs."""

from __future__ import annotations

import click

from ._app import echo_lines, library_errors, main

__all__ = ["export"]


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", default="onnx", show_default=True, type=click.Choice(["onnx", "torchscript"]))
@click.option("--int8", is_flag=True, help="Also quantize to int8 (ONNX) and report size, latency and agreement.")
@click.option("--out", default=None, type=click.Path(), help="Folder for the files (default: RUN/export).")
@click.option("--sample", default=32, show_default=True, help="Clips of the run's data for the int8 agreement.")
@library_errors
def export(run, fmt, int8, out, sample) -> None:
    """Export RUN's model (whole clip, and the streaming step where the model can stream), verified against PyTorch,
    with labels.json, preprocessing.json and export.json beside it: all a runtime without cnnlstm needs."""
    from ..export import export_run

    echo_lines(export_run(run, fmt, int8, out, sample).lines())
