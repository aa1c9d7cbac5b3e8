"""Export a trained run folder: the clip graph, the streaming step where the model can stream, int8 on request,
and beside them what a runtime without cnnlstm needs (labels, preprocessing, a manifest: :mod:`.bundle`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..ensemble import Ensemble
from ..errors import CnnlstmError, ConfigError
from ..run import Run, RunFolder
from ..streaming import check_streamable
from ._common import ExportReport
from .bundle import write_bundle

__all__ = ["ExportResult", "export_run", "sample_clips"]

FORMATS = ("onnx", "torchscript")
TOL = 1e-4  # the largest difference to PyTorch an exported graph may show


@dataclass
class ExportResult:
    """What :func:`export_run` wrote; ``lines()`` is what the command prints."""

    reports: list[ExportReport]
    no_step: str | None = None  # why there is no streaming-step graph
    int8: dict[str, Any] | None = None
    sample: str = ""  # "real" or "random" clips behind the int8 agreement
    bundle: list[tuple[Path, str]] = field(default_factory=list)  # labels, preprocessing, export.json: what each holds

    def lines(self) -> list[str]:
        out = [f"no streaming-step graph: {self.no_step}"] if self.no_step else []
        out += [str(r) for r in self.reports]
        q = self.int8
        if q:
            out.append(
                f"int8 (dynamic quantization), top-1 agreement with float32 on {q['sample_clips']} {self.sample} "
                f"clips: {q['top1_agreement']:.3f}"
            )
            out.append(
                f"  clip graph: {q['clip_mb']['fp32']:.2f} MB -> {q['clip_mb']['int8']:.2f} MB, "
                f"{q['clip_ms']['fp32']:.1f} ms -> {q['clip_ms']['int8']:.1f} ms per clip"
            )
            if "frame_ms" in q:
                out.append(
                    f"  step graph: {q['step_mb']['fp32']:.2f} MB -> {q['step_mb']['int8']:.2f} MB, "
                    f"{q['frame_ms']['fp32']:.2f} ms -> {q['frame_ms']['int8']:.2f} ms per streamed frame"
                )
        return out + [f"{path}: {what}" for path, what in self.bundle]


def export_run(
    run: str | Path, fmt: str = "onnx", int8: bool = False, out: str | Path | None = None, sample: int = 32
) -> ExportResult:
    """Export a run's model, verified against PyTorch: ``model.EXT`` (whole clip) and, for a clip model that
    can stream, ``step.EXT`` (one streaming step); beside them ``labels.json``, ``preprocessing.json`` (a raw
    input to the model's input, without cnnlstm) and ``export.json`` (every file written, its inputs, outputs
    and checks), so that the folder alone serves an edge runtime.

    Args:
        run: the run folder.
        fmt: ``"onnx"`` or ``"torchscript"``.
        int8: also quantize the ONNX graphs to int8 and report size, latency and top-1 agreement.
        out: the folder for the files (default ``RUN/export``).
        sample: clips of the run's own data (random ones when it is gone) for the int8 agreement.
    """
    from . import export_onnx, export_torchscript, int8_report

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if int8 and fmt != "onnx":
        raise ConfigError("--int8 quantizes ONNX graphs: use --format onnx")
    r = RunFolder(run).load()
    folder = Path(out) if out else r.path / "export"
    no_step = None
    try:
        check_streamable(r.model)
        if isinstance(r.model, Ensemble):
            no_step = "an ensemble exports its whole-clip graph; stream it with cnnlstm stream"
        elif r.model.kind != "clip":
            no_step = "the streaming-step export is for clip models (frames); series models export whole"
    except CnnlstmError as why:
        no_step = str(why)
    ext = "onnx" if fmt == "onnx" else "pt"
    do = export_onnx if fmt == "onnx" else export_torchscript
    reports = [do(r.model, folder / f"model.{ext}", kind="clip", tol=TOL)]
    if no_step is None:
        reports.append(do(r.model, folder / f"step.{ext}", kind="step", tol=TOL))
    result = ExportResult(reports, no_step)
    if int8:
        clips, result.sample = sample_clips(r, sample)
        result.int8 = int8_report(r.model, reports[0].path, reports[1].path if no_step is None else None, clips, folder)
    result.bundle = write_bundle(r, folder, reports, TOL, no_step, result.int8, result.sample)
    return result


def sample_clips(r: Run, n: int) -> tuple[torch.Tensor, str]:
    """Up to ``n`` clips ``(N, T, ...)`` of the run's own data (its test split where there is one), ``"real"``;
    random clips and ``"random"`` where that data is gone."""
    from ..data.batch import collate_clips
    from ..data.datasets import VideoDataset, find_videos

    data = (RunFolder(r.path).summary() or {}).get("data")
    if data and r.kind.modality == "video":
        try:
            items, classes, _ = find_videos(data, "test" if (Path(data) / "test").is_dir() else None)
            ds = VideoDataset(items[:: max(1, len(items) // n)][:n], classes, spec=r.spec, warn=False)
            batch = collate_clips([ds[i] for i in range(len(ds))])
            if batch["video"] is not None:
                return batch["video"], "real"
        except (CnnlstmError, OSError):
            pass
    steps = 16  # for a model that takes any clip length
    return torch.randn(n, *[steps if s is None else s for s in r.model.config.input_shape]), "random"
