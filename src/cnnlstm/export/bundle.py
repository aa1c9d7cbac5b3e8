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

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .._io import write_json
from ..run import Run
from ._common import ExportReport, clip_shape, own_length, quiet, session, step_example, step_names

if TYPE_CHECKING:
    from ..model import CNNLSTM

__all__ = ["FORMAT", "preprocessing", "write_bundle"]

FORMAT = 1  # of export.json and preprocessing.json: a reader that finds a higher number is older than the folder
RUNTIMES = {"onnx": "onnxruntime", "torchscript": "torchscript"}
_ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64"}

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
    int8: dict[str, Any] | None = None,
    sample: str = "",
) -> list[tuple[Path, str]]:
    """Write ``labels.json``, ``preprocessing.json`` and ``export.json`` into ``folder``, beside the graphs.

    Args:
        r: the run the graphs came from.
        folder: the export folder (the reports' files lie in it).
        reports: the verified float32 exports.
        tol: the largest difference to PyTorch their verification allowed.
        no_step: why there is no streaming-step graph, if there is none.
        int8: :func:`~cnnlstm.export.int8_report` of the ONNX graphs (their ``*.int8.onnx`` beside them).
        sample: ``"real"`` or ``"random"``: the clips behind the int8 agreement.

    Returns:
        Each file written and, in a few words, what it holds.
    """
    from .. import __version__

    prep = preprocessing(r)
    entries = _entries(r, folder, reports, tol, int8, sample)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "cnnlstm": __version__,
        "kind": r.kind.value,
        "labels": "labels.json",
        "preprocessing": "preprocessing.json",
        "outputs": _outputs(r),
        "artifacts": entries,
    }
    if any(e["kind"] == "step" for e in entries):
        manifest["streaming"] = _streaming(r.model)
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


def _entries(
    r: Run, folder: Path, reports: Sequence[ExportReport], tol: float, int8: dict[str, Any] | None, sample: str
) -> list[dict[str, Any]]:
    """export.json's artifacts: each float32 graph with its checks, then each int8 twin with its agreement."""
    from .quantize import int8_path

    fp32 = [_artifact(r.model, rep, folder, "fp32") for rep in reports]
    for entry in fp32:
        for check in entry["checks"]:
            check["tolerance"] = tol  # passed: max_abs_diff <= tolerance
    entries = list(fp32)
    for entry, rep in zip(fp32, reports):
        if int8 is None or entry["runtime"] != "onnxruntime":
            continue
        q = _artifact(r.model, ExportReport(int8_path(rep.path, folder), rep.kind), folder, "int8")
        if entry["kind"] == "clip":  # int8 is not within tol of PyTorch: it is measured on the top-1 class
            agree = {
                "input": f"{int8['sample_clips']} {sample} clips",
                "top1_agreement_with_fp32": int8["top1_agreement"],
            }
            q["checks"] = [agree]
        entries.append(q)
    return entries


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


# ---------------------------------------------------------------------------------------------- artifacts


def _artifact(model: CNNLSTM, rep: ExportReport, folder: Path, precision: str) -> dict[str, Any]:
    """One entry of ``export.json``: what the file is, what goes in and out, what it was checked against."""
    fmt, kind = rep.kind.split()
    inputs, outputs = _onnx_io(rep.path) if fmt == "onnx" else _traced_io(model, rep.path, kind)
    return {
        "path": rep.path.relative_to(folder).as_posix(),
        "runtime": RUNTIMES[fmt],
        "precision": precision,
        "kind": kind,
        "inputs": inputs,
        "outputs": outputs,
        "checks": [dict(c) for c in rep.checks],  # max |runtime - PyTorch| on fresh random inputs of each shape
    }


def _onnx_io(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The graph's own inputs and outputs as onnxruntime reads them: dynamic axes by name (``N``, ``T``)."""
    sess = session(path)

    def describe(args) -> list[dict[str, Any]]:
        return [{"name": a.name, "shape": list(a.shape), "dtype": _ORT_TYPES.get(a.type, a.type)} for a in args]

    return describe(sess.get_inputs()), describe(sess.get_outputs())


@torch.inference_mode()
def _traced_io(model: CNNLSTM, path: Path, kind: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A TorchScript file's inputs and outputs (positional, named as in ONNX): the shapes of two small runs, an
    axis that follows the batch named ``N``, one that follows the clip length ``T``."""
    with quiet():  # torch.jit.load warns that it is deprecated
        loaded = torch.jit.load(str(path))
    t = own_length(model)
    t2 = t if getattr(model, "fixed_steps", None) is not None else t + 2  # a model that takes one T: a static axis
    runs = [(1, t), (2, t2)]  # (N, T): the two pairs differ, so an axis's pair of sizes names it
    axes = {(1, 2): "N", (t, t2): "T"}
    names = (["clip"], ["logits"]) if kind == "clip" else step_names(model)
    shapes: list[list[list[tuple[int, ...]]]] = []  # run -> [inputs, outputs] -> shapes
    for n, steps in runs:
        ins = [torch.randn(clip_shape(model, n, steps))] if kind == "clip" else step_example(model, n)
        outs = loaded(*ins)
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        shapes.append([[tuple(x.shape) for x in ins], [tuple(x.shape) for x in outs]])

    def describe(which: int) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "shape": [a if a == b else axes.get((a, b)) for a, b in zip(sa, sb)],
                "dtype": "float32",
            }
            for name, sa, sb in zip(names[which], shapes[0][which], shapes[1][which])
        ]

    return describe(0), describe(1)


def _streaming(model: CNNLSTM) -> dict[str, Any]:
    """How the step graph carries a stream: feed each ``*_out`` back as its input on the next frame."""
    ins, outs = step_names(model)
    carry = dict(zip(outs[1:], ins[1:]))
    d: dict[str, Any] = {
        "inputs": ins,
        "outputs": outs,
        "carry": carry,
        "frame": "one frame of the stream, preprocessed as one frame of a clip (preprocessing.json), in the "
        "layout without T, N streams at once",
        "start": "a new stream starts with "
        + " and ".join(n for n in ins[1:] if n != "previous")
        + " all zeros (their shapes in the step artifact's inputs)",
        "logits": "after each frame: this frame's logits, as the clip graph gives them for it"
        if model.head.per_step
        else "after each frame: the clip logits of the stream's frames so far, as the clip graph gives them",
    }
    if "previous" in ins:
        d["start"] += "; previous = the stream's first frame itself (no motion yet)"
    return d


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
