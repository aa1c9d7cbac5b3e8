"""What an export folder holds beside its graphs, so that an edge runtime needs nothing of cnnlstm.

- ``labels.json``: the class names, index = output index (the run's own ``labels.json``);
- ``preprocessing.json``: how a raw input (a video file, a series) becomes the model's input, as the run made
  its inputs: for videos the frames picked, the resize (FFmpeg's bilinear scaler, RGB), the scaling and
  normalisation and the layout; for series the normaliser; and whether the graph itself takes the motion input;
- ``export.json``: one entry per artifact (runtime, precision, kind, path, inputs and outputs with their
  shapes, dynamic axes named ``N`` and ``T``, and the checks it passed), where labels and preprocessing are,
  and how the streaming step graph carries its state.

``examples/05_onnxruntime_only.py`` classifies a video from these files with onnxruntime, PyAV and numpy only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._io import write_json
from ..run import Run
from ._artifacts import artifacts, streaming
from ._common import ExportReport

__all__ = ["FORMAT", "preprocessing", "write_bundle"]

FORMAT = 1  # of export.json and preprocessing.json: a reader that finds a higher number is older than the folder

# how cnnlstm counts, picks, decodes and resizes a video's frames (cnnlstm.data.video, cnnlstm.data.sampling)
_FRAMES = (
    "frames: the number of packets of the file's first video stream that are not empty "
    "(PyAV: container.demux(stream), packet.size > 0); frame i is the i-th frame decoded from the start"
)
_SAMPLING = {
    "uniform": "indices[k] = min(floor((k + 0.5) * frames / clip_len), frames - 1) for k = 0 .. clip_len - 1: "
    "the middle frame of each of clip_len equal segments (a video shorter than clip_len repeats frames)",
    "dense": "windows of clip_len frames, stride apart, from frame 0, every window's span apart, the last one "
    "ending at the last frame (cnnlstm.data.sampling.dense_windows); each window is one clip, and the "
    "softmax of the windows' logits is averaged",
}
_PADS = {
    "repeat": "a video shorter than clip_len keeps clip_len frames: the sampling rule repeats frames",
    "lengths": "a video shorter than clip_len gives its frames only, all of them (indices 0 .. frames - 1): "
    "run that clip alone (N = 1), the graph's T is dynamic",
}
_MOTION = {
    "none": "the model reads plain frames",
    "diff": "the graph takes each frame's difference from the frame before itself: feed plain frames, "
    "never the differences",
    "stack": "the graph stacks each frame with its difference from the frame before itself: feed plain frames, "
    "never the differences",
}


def write_bundle(
    r: Run,
    folder: Path,
    reports: Sequence[ExportReport],
    tol: float,
    no_step: str | None = None,
    calibration: str | None = None,
) -> list[tuple[Path, str]]:
    """Write ``labels.json``, ``preprocessing.json`` and ``export.json`` into ``folder``, beside the graphs.

    Args:
        r: the run the graphs came from.
        folder: the export folder (the reports' files lie in it).
        reports: the exports: float32 graphs verified against PyTorch, and int8 twins checked against them.
        tol: the largest difference to PyTorch the float32 verification allowed.
        no_step: why there is no streaming-step graph, if there is none.
        calibration: what the int8 graphs were calibrated on, in a few words.

    Returns:
        Each file written and, in a few words, what it holds.
    """
    from .. import __version__

    prep = preprocessing(r)
    digest = weights_digest(r.path)
    entries = artifacts(r.model, folder, reports, tol, calibration)
    entries += _kept(folder, digest, entries)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "cnnlstm": __version__,
        "kind": r.kind.value,
        "weights": digest,
        "labels": "labels.json",
        "preprocessing": "preprocessing.json",
        "outputs": _outputs(r),
        "artifacts": entries,
    }
    if any(e["kind"] == "step" for e in entries):
        manifest["streaming"] = streaming(r.model)
    else:
        manifest["no_step"] = no_step or "no streaming-step graph was exported"
    files = [
        (write_json(folder / "labels.json", list(r.classes)), f"{len(r.classes)} names, index = output index"),
        (write_json(folder / "preprocessing.json", prep), _prep_summary(r, prep)),
        (
            write_json(folder / "export.json", manifest),
            f"{len(entries)} artifacts: runtime, precision, inputs, outputs, checks"
            + ("; the step graph's state" if "streaming" in manifest else ""),
        ),
    ]
    return files


def weights_digest(run: Path) -> str | None:
    """``sha256:HEX`` of the run's ``model.safetensors``: which weights an export folder's graphs hold; None
    without the file."""
    path = run / "model.safetensors"
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()}"


def _kept(folder: Path, digest: str | None, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The previous ``export.json``'s artifacts of the other runtimes, kept where they hold the same weights and
    their files are still there: ``cnnlstm export RUN --runtime openvino`` after ``cnnlstm export RUN`` keeps
    the ONNX Runtime graphs listed."""
    try:
        old = json.loads((folder / "export.json").read_text())
    except (OSError, ValueError):
        return []
    if digest is None or old.get("weights") != digest:
        return []
    runtimes, paths = {e["runtime"] for e in entries}, {e["path"] for e in entries}
    return [
        e
        for e in old.get("artifacts", [])
        if e["runtime"] not in runtimes and e["path"] not in paths and (folder / e["path"]).is_file()
    ]


# ---------------------------------------------------------------------------------------------- preprocessing


def preprocessing(r: Run) -> dict[str, Any]:
    """How a raw input becomes the input of ``r``'s graphs, without cnnlstm: what ``preprocessing.json`` holds.

    Video runs: the run's :class:`~cnnlstm.data.datasets.ClipSpec` as prediction samples with it (``random``
    sampling, a training choice, becomes ``uniform``), the per-channel mean and std actually applied, and the
    steps in order. Series runs: the normaliser fitted on the training part, and a forecaster's windows.
    """
    model = r.model
    layout = model.config.layout
    motion = model.config.motion
    d: dict[str, Any] = {"format": FORMAT, "kind": r.kind.value, "input": "clip", "layout": layout}
    if r.kind.modality == "video":
        d.update(_video(r))
    else:
        d.update(_series(r))
    d["motion"] = {"mode": motion, "in_graph": True, "note": _MOTION[motion]}
    return d


def _video(r: Run) -> dict[str, Any]:
    spec = r.spec.for_scoring()
    c = spec.channels
    mean = list(spec.mean[:c] if len(spec.mean) >= c else spec.mean[:1] * c)  # as ClipTransform applies them
    std = list(spec.std[:c] if len(spec.std) >= c else spec.std[:1] * c)
    layout = r.model.config.layout
    pixel = "rgb24" if c == 3 else "gray"
    h, w = spec.size
    shape = ["N", *(spec.clip_len if a == "T" else s for a, s in zip(layout[1:], r.model.config.input_shape))]
    steps = [
        f"decode the video with FFmpeg (PyAV); {_FRAMES}",
        f"pick the frames by {spec.sampling!r} sampling: {_SAMPLING[spec.sampling]}"
        + (f"; stride {spec.stride}" if spec.sampling == "dense" else ""),
        f"pad {spec.pad!r}: {_PADS[spec.pad]}",
        f"resize each picked frame to {w}x{h} (width x height) and convert it to {pixel} with FFmpeg's "
        f"bilinear scaler: PyAV frame.reformat(width={w}, height={h}, format={pixel!r}, "
        "interpolation='BILINEAR'); a frame with a rotation flag (frame.rotation, phone videos) of 90 or 270 "
        "degrees is scaled with width and height swapped, and every rotated frame is turned upright with "
        "numpy.rot90(array, k=rotation // 90)",
        "stack the frames: (T, H, W, C) uint8",
        "scale to [0, 1]: x / 255 (float32)",
        "normalise each channel c: (x - mean[c]) / std[c]",
        f"transpose (T, H, W, C) to the layout {layout} without N, and add the batch axis N in front",
    ]
    return {
        "input_shape": shape,
        "dtype": "float32",
        "clip_len": spec.clip_len,
        "size": [h, w],
        "channels": c,
        "sampling": spec.sampling,
        "stride": spec.stride,
        "pad": spec.pad,
        "resize": {
            "library": "FFmpeg swscale (PyAV VideoFrame.reformat)",
            "interpolation": "bilinear",
            "pixel_format": pixel,
        },
        "scale": 255.0,
        "mean": mean,
        "std": std,
        "steps": steps,
    }


def _series(r: Run) -> dict[str, Any]:
    spec, fc = r.spec, r.data.forecast
    layout = r.model.config.layout
    sizes = dict(zip(layout[1:], r.model.config.input_shape))
    d: dict[str, Any] = {
        "input_shape": ["N", *(sizes[a] or a for a in layout[1:])],  # a T of None: any length, named T
        "dtype": "float32",
        "features": spec.features,
        "mean": list(spec.mean),
        "std": list(spec.std),
    }
    steps = [
        f"a series is T steps of {spec.features} features: (T, F) float32",
        "normalise each feature f with the training part's statistics: (x - mean[f]) / std[f]",
    ]
    if fc is None:
        steps += [
            f"lay the series out as {layout}, the batch axis N in front",
            "one series per call (N = 1), or several of one length: the graph takes no lengths, so padding "
            "would be read as data",
        ]
    else:
        d["forecast"] = {"lookback": fc.lookback, "horizon": fc.horizon, "targets": list(fc.targets)}
        steps = [
            f"take the last {fc.lookback} steps of the history",
            *steps,
            "subtract the window's own level: level[f] = the mean of feature f over the window's steps",
            f"lay the window out as {layout}, the batch axis N in front",
            f"the output (N, {fc.horizon}, {len(fc.targets)}) is relative to that level: add level[targets], "
            "then undo the normalisation: y * std[targets] + mean[targets] (targets: forecast.targets)",
        ]
    d["steps"] = steps
    return d


def _prep_summary(r: Run, prep: dict[str, Any]) -> str:
    if r.kind.modality == "video":
        h, w = prep["size"]
        color = "RGB" if prep["channels"] == 3 else "gray"
        return (
            f"a video's {prep['clip_len']} {prep['sampling']} frames, {w}x{h} {color} (FFmpeg bilinear), "
            f"/ 255, (x - mean) / std, {prep['layout']}"
        )
    return f"a series' {prep['features']} features, (x - mean) / std, {prep['layout']}"


def _outputs(r: Run) -> str:
    task = r.kind.task
    if task == "classify":
        return (
            "logits: one score per name of labels.json on the last axis (index = output index); "
            "softmax over it gives the probabilities"
        )
    if task == "forecast":
        return (
            "logits (N, horizon, targets): the next steps of the targets named in labels.json, relative to the "
            "window's level and normalised: preprocessing.json's steps undo both"
        )
    return (
        "logits: the model's prediction of each next step; the anomaly score (its error against the run's "
        "threshold, data.json) is computed by cnnlstm, not in this folder"
    )
