"""Classify a video with an exported run and nothing of cnnlstm or PyTorch: onnxruntime, PyAV and numpy.

    cnnlstm export runs/mine                                  # writes runs/mine/export/
    python examples/05_onnxruntime_only.py runs/mine/export clip.mp4 --top-k 3

The export folder says everything this script needs: export.json names the graph and its input,
labels.json the classes, preprocessing.json how the run made its clips. The steps follow it, and
match cnnlstm's own decoder: count the frames, take the middle frame of each of T equal segments,
resize with FFmpeg's bilinear scaler in RGB (PyAV's reformat), scale to [0, 1], normalise per
channel, lay the clip out as the model wants it, run model.onnx, softmax.
"""

import argparse
import json
import sys
from pathlib import Path

import av
import numpy as np
import onnxruntime as ort


def count_frames(path: Path) -> int:
    """The frames of the first video stream, counted as cnnlstm counts them: its non-empty packets."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size > 0)


def uniform_indices(frames: int, t: int, pad: str) -> np.ndarray:
    """The middle frame of each of ``t`` equal segments; a short video repeats frames, or with pad "lengths"
    gives its frames only."""
    if frames < t and pad == "lengths":
        return np.arange(frames)
    return np.minimum(np.floor((np.arange(t) + 0.5) * frames / t), frames - 1).astype(np.int64)


def read_frames(path: Path, indices: np.ndarray, size: tuple[int, int], pixel_format: str) -> np.ndarray:
    """Decode from the start and keep the frames at ``indices``, resized by FFmpeg: ``(T, H, W, C)`` uint8."""
    h, w = size
    wanted, got = set(indices.tolist()), {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                rotation = int(frame.rotation or 0) % 360
                fw, fh = (h, w) if rotation in (90, 270) else (w, h)  # scaled so that it is (H, W) once upright
                arr = frame.reformat(width=fw, height=fh, format=pixel_format, interpolation="BILINEAR").to_ndarray()
                arr = arr[:, :, None] if arr.ndim == 2 else arr  # gray: (H, W) -> (H, W, 1)
                got[i] = np.rot90(arr, k=rotation // 90) if rotation else arr
            if len(got) == len(wanted):
                break
    return np.stack([got[i] for i in indices.tolist()])  # (T, H, W, C)


def to_model_input(frames: np.ndarray, prep: dict) -> np.ndarray:
    """uint8 ``(T, H, W, C)`` -> the model's float32 input, batch of one, in its layout (e.g. NTCHW)."""
    x = frames.astype(np.float32) / prep["scale"]
    x = (x - np.asarray(prep["mean"], np.float32)) / np.asarray(prep["std"], np.float32)  # per channel, C last
    order = [("THWC").index(axis) for axis in prep["layout"][1:]]  # e.g. NTCHW: (T, H, W, C) -> (T, C, H, W)
    return np.ascontiguousarray(x.transpose(order))[None]  # (1, ...) in the layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path, help="the folder `cnnlstm export RUN` wrote (RUN/export)")
    parser.add_argument("video", type=Path)
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args()

    manifest = json.loads((args.export_dir / "export.json").read_text())
    labels = json.loads((args.export_dir / manifest["labels"]).read_text())
    prep = json.loads((args.export_dir / manifest["preprocessing"]).read_text())
    if prep["kind"] != "video-classify" or prep["sampling"] != "uniform":
        sys.exit(f"{args.export_dir} holds a {prep['kind']} run: this example classifies videos sampled 'uniform'")
    wanted = ("onnxruntime", "fp32", "clip")
    graphs = [a for a in manifest["artifacts"] if (a["runtime"], a["precision"], a["kind"]) == wanted]
    if not graphs:
        sys.exit(f"{args.export_dir} has no ONNX clip graph: run `cnnlstm export RUN` (the default --format onnx)")
    graph = graphs[0]  # model.onnx: input "clip" (N, T, ...) in prep["layout"], output "logits" (N, classes)

    frames = count_frames(args.video)
    indices = uniform_indices(frames, prep["clip_len"], prep["pad"])
    clip = to_model_input(read_frames(args.video, indices, prep["size"], prep["resize"]["pixel_format"]), prep)
    # prep["motion"]["in_graph"]: a model with motion input takes the frame differences inside the graph, not here

    session = ort.InferenceSession(str(args.export_dir / graph["path"]), providers=["CPUExecutionProvider"])
    logits = session.run(None, {graph["inputs"][0]["name"]: clip})[0][0]  # (classes,)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()  # softmax
    print(f"{args.video}: frames {indices.tolist()} of {frames}, input {clip.shape} {prep['layout']}")
    for i in np.argsort(-probs)[: args.top_k]:
        print(f"  {labels[i]}  {probs[i]:.6f}")


if __name__ == "__main__":
    main()
