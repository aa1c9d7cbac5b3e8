"""``cnnlstm export``: the run's graphs, verified against PyTorch, int8 on request, and what serving them needs."""

from __future__ import annotations

import click

from ._app import echo_lines, library_errors, main

__all__ = ["export"]


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", default="onnx", show_default=True, type=click.Choice(["onnx", "torchscript"]))
@click.option(
    "--runtime",
    default="onnxruntime",
    show_default=True,
    type=click.Choice(["onnxruntime", "openvino"]),
    help="For --format onnx: ONNX files, or OpenVINO IR (.xml/.bin) converted from them (pip install 'cnnlstm[edge]').",
)
@click.option(
    "--int8",
    is_flag=True,
    help="Also write static int8 twins (ONNX Runtime QDQ or OpenVINO NNCF), calibrated on the run's clips, "
    "and check their top-1 agreement with float32.",
)
@click.option("--out", default=None, type=click.Path(), help="Folder for the files (default: RUN/export).")
@click.option("--sample", default=32, show_default=True, help="Held-out clips of the run's data: int8 agreement.")
@click.option("--calibration", default=32, show_default=True, help="Training clips of the run's data: calibration.")
@library_errors
def export(run, fmt, runtime, int8, out, sample, calibration) -> None:
    """Export RUN's model (whole clip, and the streaming step where the model can stream), verified against PyTorch,
    with labels.json, preprocessing.json and export.json beside it: all a runtime without cnnlstm needs."""
    from ..export import export_run

    echo_lines(export_run(run, fmt, int8, out, sample, runtime=runtime, calibration=calibration).lines())
