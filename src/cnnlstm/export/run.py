"""Export a trained run folder: the clip graph, the streaming step where the model can stream, static int8 on
request, and beside them what a runtime without cnnlstm needs (labels, preprocessing, a manifest: :mod:`.bundle`)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..ensemble import Ensemble
from ..errors import CnnlstmError, ConfigError, require
from ..run import Run, RunFolder
from ..streaming import check_streamable
from ._common import ExportReport
from .bundle import write_bundle

__all__ = ["ExportResult", "export_run", "sample_clips"]

FORMATS = ("onnx", "torchscript")
RUNTIMES = ("onnxruntime", "openvino")  # of an ONNX export: the graphs as ONNX files, or as OpenVINO IR
TOL = 1e-4  # the largest difference to PyTorch an exported graph may show
_INT8 = {
    "onnxruntime": "ONNX Runtime static QDQ, weights per channel",
    "openvino": "NNCF post-training quantization",
}


@dataclass
class ExportResult:
    """What :func:`export_run` wrote; ``lines()`` is what the command prints."""

    reports: list[ExportReport]  # the float32 graphs, then their int8 twins
    no_step: str | None = None  # why there is no streaming-step graph
    calibration: str | None = None  # what the int8 graphs were calibrated on
    sample: str = ""  # "real" or "random": the clips behind the int8 agreement
    bundle: list[tuple[Path, str]] = field(default_factory=list)  # labels, preprocessing, export.json: what each holds

    def lines(self) -> list[str]:
        out = [f"no streaming-step graph: {self.no_step}"] if self.no_step else []
        out += [str(r) for r in self.reports if r.precision == "fp32"]
        int8 = [r for r in self.reports if r.precision == "int8"]
        if int8:
            out.append(f"int8 ({_INT8[_runtime(int8[0])]}), calibrated on {self.calibration}:")
            out += [str(r) for r in int8]
        return out + [f"{path}: {what}" for path, what in self.bundle]


def _runtime(report: ExportReport) -> str:
    return "openvino" if report.kind.startswith("openvino") else "onnxruntime"


def export_run(
    run: str | Path,
    fmt: str = "onnx",
    int8: bool = False,
    out: str | Path | None = None,
    sample: int = 32,
    runtime: str = "onnxruntime",
    calibration: int = 32,
) -> ExportResult:
    """Export a run's model, verified against PyTorch: ``model.EXT`` (whole clip) and, for a clip model that
    can stream, ``step.EXT`` (one streaming step); beside them ``labels.json``, ``preprocessing.json`` (a raw
    input to the model's input, without cnnlstm) and ``export.json`` (every file written, its inputs, outputs
    and checks), so that the folder alone serves an edge runtime.

    Args:
        run: the run folder.
        fmt: ``"onnx"`` or ``"torchscript"``.
        int8: also write static int8 twins of the graphs (``STEM.int8.EXT``), calibrated on ``calibration``
            clips of the run's own data (its training split), and check their top-1 agreement with float32 on
            ``sample`` other clips (its test split).
        out: the folder for the files (default ``RUN/export``).
        sample: clips for the int8 agreement (random ones where the run's data is gone).
        runtime: for ONNX, ``"onnxruntime"`` (``.onnx`` files) or ``"openvino"`` (OpenVINO IR ``.xml``/``.bin``,
            converted from the verified ONNX graphs and verified again in OpenVINO, and ``stream.xml``, the step
            with its state held in OpenVINO, with ``int8`` also ``stream.int8.xml``; ``pip install 'cnnlstm[edge]'``).
        calibration: clips for the int8 calibration.
    """
    _check_options(fmt, runtime, int8)
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
    kinds = ["clip"] + (["step"] if no_step is None else [])
    result = ExportResult(_float32(r.model, folder, fmt, runtime, kinds), no_step)
    if int8:
        from .quantize import quantize_export

        calib, calib_kind = sample_clips(r, calibration, role="calibrate")
        clips, result.sample = sample_clips(r, sample, role="check")
        result.calibration = f"{len(calib)} {calib_kind} clips"
        fp32 = [rep for rep in result.reports if not rep.kind.endswith("stream")]  # the stream: from the int8 step
        int8 = [quantize_export(r.model, rep, calib, clips, folder, result.sample) for rep in fp32]
        result.reports += int8 + _int8_stream(r.model, result.reports + int8, clips, folder, result.sample)
    result.bundle = write_bundle(r, folder, result.reports, TOL, no_step, result.calibration)
    return result


def _int8_stream(
    model: torch.nn.Module, reports: list[ExportReport], clips: torch.Tensor, folder: Path, sample: str
) -> list[ExportReport]:
    """OpenVINO: ``stream.int8.xml``, the int8 step made stateful as the float32 stream is, checked against it on
    ``clips``; nothing for other runtimes, or without a stream."""
    found = {(rep.kind, rep.precision): rep for rep in reports}
    step, stream = found.get(("openvino step", "int8")), found.get(("openvino stream", "fp32"))
    if step is None or stream is None:
        return []
    from .ov_stream import export_openvino_stream_int8

    return [export_openvino_stream_int8(model, step.path, folder / "stream.int8.xml", stream.path, clips, sample)]


def _check_options(fmt: str, runtime: str, int8: bool) -> None:
    """Refuse what cannot be done before anything is written; the missing package named with its extra."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if int8 and fmt != "onnx":
        raise ConfigError("--int8 quantizes ONNX graphs: use --format onnx")
    if runtime != "onnxruntime" and fmt != "onnx":
        raise ConfigError(f"--runtime {runtime} converts the verified ONNX graphs: use --format onnx")
    if fmt == "onnx":
        require("onnx", "export", "ONNX export")
    if runtime == "openvino":
        require("openvino", "edge", "OpenVINO export")
        if int8:
            require("nncf", "edge", "OpenVINO int8 quantization")


def _float32(model: torch.nn.Module, folder: Path, fmt: str, runtime: str, kinds: list[str]) -> list[ExportReport]:
    """The verified float32 graphs ``model.EXT`` and ``step.EXT`` of each kind, and for OpenVINO ``stream.xml``
    (the step with its state held in the runtime); the ONNX graphs OpenVINO's come from stay in a temporary
    folder."""
    from . import export_onnx, export_openvino, export_torchscript

    names = {"clip": "model", "step": "step"}
    if fmt == "torchscript":
        return [export_torchscript(model, folder / f"{names[k]}.pt", kind=k, tol=TOL) for k in kinds]
    if runtime == "onnxruntime":
        return [export_onnx(model, folder / f"{names[k]}.onnx", kind=k, tol=TOL) for k in kinds]
    from .ov_stream import export_openvino_stream

    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in kinds:
            onnx = export_onnx(model, Path(tmp) / f"{names[k]}.onnx", kind=k, tol=TOL).path
            reports.append(export_openvino(model, folder / f"{names[k]}.xml", kind=k, onnx=onnx, tol=TOL))
            if k == "step":  # the same step with its state held by OpenVINO
                reports.append(export_openvino_stream(model, folder / "stream.xml", onnx=onnx, tol=TOL))
    return reports


def sample_clips(r: Run, n: int, role: str = "check") -> tuple[torch.Tensor, str]:
    """Up to ``n`` clips ``(N, T, ...)`` of the run's own data, ``"real"``; random clips and ``"random"`` where
    that data is gone.

    Args:
        r: the run.
        n: how many clips at most.
        role: ``"calibrate"``: clips of the training split (int8 calibration); ``"check"``: clips of the test
            split, else the validation split (int8 agreement). Without a held-out split the two roles take
            alternate videos of the set, so they never share a clip; nor do their random clips (two seeds).
    """
    if role not in ("calibrate", "check"):
        raise ConfigError(f"unknown clip role {role!r}: expected 'calibrate' or 'check'")
    data = (RunFolder(r.path).summary() or {}).get("data")
    if data and r.kind.modality == "video":
        clips = _real_clips(r, Path(data), n, role)
        if clips is not None:
            return clips, "real"
    steps = 16  # for a model that takes any clip length
    g = torch.Generator().manual_seed(0 if role == "calibrate" else 1)
    return torch.randn(n, *[steps if s is None else s for s in r.model.config.input_shape], generator=g), "random"


def _real_clips(r: Run, data: Path, n: int, role: str) -> torch.Tensor | None:
    """``n`` clips of the run's videos for ``role`` (:func:`sample_clips`), spread over the set; None where the
    videos cannot be read."""
    from ..data.batch import collate_clips
    from ..data.datasets import VideoDataset, find_videos

    held_out = next((s for s in ("test", "val") if (data / s).is_dir()), None)
    try:
        if held_out:
            items, classes, _ = find_videos(data, held_out if role == "check" else "train")
        else:  # one set (or a manifest): alternate videos
            items, classes, _ = find_videos(data)
            items = items[role == "check" :: 2]
        if not items:
            return None
        ds = VideoDataset(items[:: max(1, len(items) // n)][:n], classes, spec=r.spec, warn=False)
        batch = collate_clips([ds[i] for i in range(len(ds))])
    except (CnnlstmError, OSError):
        return None
    return batch["video"]
