"""Streaming: latency per new frame of carrying the RNN state, against recomputing a 16-frame window;
float32 against int8 (ONNX Runtime). The reference model (4 conv blocks 32-256, GAP, LSTM 256) on
3x112x112 frames, batch 1, measured side by side in one run.

Run: python bench/streaming.py [--frames 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import bar_chart, machine, save, summary

from cnnlstm import CNNLSTM
from cnnlstm.export import export_onnx, quantize_onnx
from cnnlstm.export._common import session as _session


def per_frame_ms(fn, frames: int) -> list[float]:
    times = []
    for i in range(frames):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1e3)
    return times[3:]  # the first steps warm caches and allocators


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--window", type=int, default=16)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = CNNLSTM(input_shape=(args.window, 3, 112, 112), num_classes=10).eval()
    video = torch.randn(args.frames + args.window, 3, 112, 112)
    w = args.window
    results: dict[str, list[float]] = {}

    streamer = model.stream()
    for i in range(w):  # the stream has seen the window already, as the recomputation has
        streamer.step(video[i : i + 1])

    def stream(i: int) -> None:
        streamer.step(video[w + i : w + i + 1])

    @torch.inference_mode()
    def window(i: int) -> None:
        model(video[i + 1 : i + 1 + w].unsqueeze(0))

    cache = [model.backbone.module(video[j : j + 1]) for j in range(w)]

    @torch.inference_mode()
    def cached(i: int) -> None:  # recompute the LSTM over cached per-frame CNN features
        cache.pop(0)
        cache.append(model.backbone.module(video[w + i : w + i + 1]))
        seq = model.bridge(torch.stack(cache, dim=1))
        model.head(model.rnn(seq)[0])

    with tempfile.TemporaryDirectory() as tmp:
        step32 = export_onnx(model, Path(tmp) / "step.onnx", kind="step", batches=(1,)).path
        step8 = quantize_onnx(step32, Path(tmp) / "step.int8.onnx")
        clip32 = export_onnx(model, Path(tmp) / "clip.onnx", batches=(1,)).path
        clip8 = quantize_onnx(clip32, Path(tmp) / "clip.int8.onnx")
        sizes = {
            k: p.stat().st_size / 1e6
            for k, p in {"step fp32": step32, "step int8": step8, "clip fp32": clip32, "clip int8": clip8}.items()
        }
        sessions = {
            k: _session(p) for k, p in {"step32": step32, "step8": step8, "clip32": clip32, "clip8": clip8}.items()
        }
        state = {"h": np.zeros((1, 1, 256), np.float32), "c": np.zeros((1, 1, 256), np.float32)}
        frames_np = video.numpy()

        def onnx_step(name):
            def run(i: int) -> None:
                out = sessions[name].run(None, {"frame": frames_np[w + i : w + i + 1], **state})
                state["h"], state["c"] = out[1], out[2]

            return run

        def onnx_window(name):
            def run(i: int) -> None:
                sessions[name].run(None, {"clip": frames_np[None, i + 1 : i + 1 + w]})

            return run

        cases = {
            "stream (torch)": stream,
            f"recompute {w}-frame window (torch)": window,
            "window over cached CNN features (torch)": cached,
            "stream (onnx fp32)": onnx_step("step32"),
            "stream (onnx int8)": onnx_step("step8"),
            f"recompute {w}-frame window (onnx fp32)": onnx_window("clip32"),
            f"recompute {w}-frame window (onnx int8)": onnx_window("clip8"),
        }
        for _ in range(3):  # interleaved repetitions
            for name, fn in cases.items():
                results.setdefault(name, []).extend(per_frame_ms(fn, args.frames // 3 + 3))

        # agreement of int8 with fp32 on the streamed outputs (random frames: a weak check)
        h = {"h": np.zeros((1, 1, 256), np.float32), "c": np.zeros((1, 1, 256), np.float32)}
        h8 = dict(h)
        agree = []
        for i in range(args.frames):
            a = sessions["step32"].run(None, {"frame": frames_np[i : i + 1], **h})
            b = sessions["step8"].run(None, {"frame": frames_np[i : i + 1], **h8})
            h, h8 = {"h": a[1], "c": a[2]}, {"h": b[1], "c": b[2]}
            agree.append(int(a[0].argmax() == b[0].argmax()))

    table = {k: summary(v) for k, v in results.items()}
    ratio = table[f"recompute {w}-frame window (torch)"]["median"] / table["stream (torch)"]["median"]
    result = {
        "machine": machine(),
        "window": w,
        "ms_per_new_frame": table,
        "sizes_mb": sizes,
        "stream_speedup_vs_window_torch": ratio,
        "int8_top1_agreement_random_frames": statistics.mean(agree),
    }
    path = save("streaming", result)
    png = bar_chart(
        "streaming",
        [k.replace(" (", "\n(") for k in table],
        [v["median"] for v in table.values()],
        "ms per new frame",
        f"batch 1, 3x112x112, reference model, {result['machine'].get('processor')}",
    )
    print(f"processor: {result['machine'].get('processor')}, torch threads {result['machine'].get('threads')}")
    for k, v in table.items():
        print(f"{k:<44} {v['median']:8.2f} ms/frame  (min {v['min']:.2f}, max {v['max']:.2f})")
    print(f"streaming is {ratio:.1f}x faster than recomputing the {w}-frame window (torch)")
    print("sizes MB: " + ", ".join(f"{k} {v:.2f}" for k, v in sizes.items()))
    print(f"int8 vs fp32 top-1 agreement on {args.frames} random streamed frames: {statistics.mean(agree):.2f}")
    print(f"json: {path}\npng:  {png}")


if __name__ == "__main__":
    main()
