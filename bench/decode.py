"""Decoding throughput: frames/s from H.264 MP4 files to model-ready clip tensors, 0, 1 and 2 workers.

Run: python bench/decode.py [--videos 24] [--repeats 3]

Each worker count is measured on the same files, interleaved over repetitions; the training
speed of the default model on the same clips is measured beside it, to tell whether decoding
would starve training.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import bar_chart, machine, save, summary

from cnnlstm import CNNLSTM
from cnnlstm.data import write_video
from cnnlstm.data.batch import collate_clips
from cnnlstm.data.datasets import ClipSpec, VideoDataset, VideoItem


def make_videos(root: Path, n: int, frames: int = 150, size: tuple[int, int] = (240, 320)) -> list[VideoItem]:
    rng = np.random.default_rng(0)
    items = []
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        base = (np.sin(xx / 17.0 + i) * 60 + 100).astype(np.float32)
        video = np.empty((frames, h, w, 3), np.uint8)
        for t in range(frames):
            img = base + 40 * np.sin((xx + 3 * t) / 9.0) * np.cos((yy - 2 * t) / 11.0)
            img += rng.normal(0, 3, size=img.shape)
            video[t] = np.clip(img, 0, 255).astype(np.uint8)[:, :, None]
        path = root / f"v{i:03d}.mp4"
        write_video(path, video, fps=30)
        items.append(VideoItem(str(path), i % 4))
    return items


def decode_rate(ds: VideoDataset, workers: int, batch: int = 8) -> float:
    """Steady-state frames/s through a DataLoader into (N, T, C, H, W) float tensors.

    Workers are started and warmed by a first pass; the second pass is timed.
    """
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch,
        num_workers=workers,
        collate_fn=collate_clips,
        persistent_workers=workers > 0,
        multiprocessing_context="forkserver" if workers else None,
    )
    for _ in loader:  # warm-up: worker start, imports, first decodes
        pass
    t0 = time.perf_counter()
    frames = 0
    for b in loader:
        frames += b["video"].shape[0] * b["video"].shape[1]
    return frames / (time.perf_counter() - t0)


def train_rate(spec: ClipSpec, batch: int = 8, steps: int = 3) -> float:
    """Frames/s of training steps of the default model on clips of this spec (data already in memory)."""
    model = CNNLSTM(input_shape=(spec.clip_len, 3, *spec.size), num_classes=4)
    opt = torch.optim.Adam(model.parameters())
    x = torch.randn(batch, spec.clip_len, 3, *spec.size)
    y = torch.randint(0, 4, (batch,))
    torch.nn.functional.cross_entropy(model(x), y).backward()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return batch * spec.clip_len * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    spec = ClipSpec(clip_len=16, size=(112, 112), sampling="uniform")
    with tempfile.TemporaryDirectory() as tmp:
        items = make_videos(Path(tmp), args.videos)
        ds = VideoDataset(items, ["a", "b", "c", "d"], spec=spec)
        rates: dict[str, list[float]] = {"0 workers (main process)": [], "1 worker": [], "2 workers": []}
        for _ in range(args.repeats):
            for workers, key in zip((0, 1, 2), rates):
                rates[key].append(decode_rate(ds, workers))
    train = [train_rate(spec) for _ in range(2)]
    result = {
        "machine": machine(),
        "what": "frames/s, 320x240 H.264 MP4 (150 frames) -> uniform 16-frame clips resized to 112x112 by FFmpeg's "
        "scaler -> normalised float tensors (N, T, C, H, W), batch 8",
        "decode_frames_per_s": {k: summary(v) for k, v in rates.items()},
        "default_model_training_frames_per_s": summary(train),
    }
    path = save("decode", result)
    png = bar_chart(
        "decode",
        [*rates, "training\n(default model)"],
        [result["decode_frames_per_s"][k]["median"] for k in rates] + [summary(train)["median"]],
        "frames/s",
        f"decode vs training, {result['machine'].get('processor', '?')}",
    )
    print(f"processor: {result['machine'].get('processor')}  torch threads: {result['machine'].get('threads')}")
    for k, v in result["decode_frames_per_s"].items():
        print(f"decode {k:<26} {v['median']:8.0f} frames/s  (min {v['min']:.0f}, max {v['max']:.0f})")
    print(f"training, default model      {summary(train)['median']:8.0f} frames/s")
    print(f"json: {path}\npng:  {png}")


if __name__ == "__main__":
    main()
