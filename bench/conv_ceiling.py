"""The float32 inference ceiling of the reference model on this machine: each block's 3x3 convolution alone.

Run: python bench/conv_ceiling.py [--repeats 3] [--chunks 2,4,8,16]

Times each of the reference model's four convolutions (3->32 at 112x112, 32->64 at 56x56, 64->128 at 28x28,
128->256 at 14x14) as cnnlstm's inference path runs them: oneDNN's blocked tensors, weights reordered once,
a chunk of frames per call, for several chunk sizes. Repetitions are interleaved (round r runs every layer and
chunk once); the median of each is kept. The ceiling is the clips/s that the convolutions alone allow, 16
frames per clip at the best chunk size per block, with everything else (pooling, ReLU, LSTM) free: an
implementation of the same model cannot go faster in float32 without faster convolutions. bench/speed.py
gives what Keras and cnnlstm reach, for the ratio this ceiling allows, and times the training ceiling
(:func:`convs_train`: forward and backward of the four convolutions, 8 frames a call, the best of 8-128 here)
in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, machine, save

BLOCKS = [(3, 32, 112), (32, 64, 56), (64, 128, 28), (128, 256, 14)]  # (C_in, C_out, H = W) of the reference model
FRAMES = 16


ARGS = ([1, 1], [1, 1], [1, 1], 1)  # padding, stride, dilation, groups of every 3x3 convolution here


def blocked_conv(c_in: int, c_out: int, size: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input ``(chunk, c_in, size, size)``, weight (reordered once into oneDNN's layout) and bias of a 3x3
    convolution with random values, all oneDNN blocked tensors, as the inference path holds them."""
    w = torch._C._nn.mkldnn_reorder_conv2d_weight(torch.randn(c_out, c_in, 3, 3).to_mkldnn(), *ARGS)
    return torch.randn(chunk, c_in, size, size).to_mkldnn(), w, torch.zeros(c_out).to_mkldnn()


def conv_gflops(c_in: int, c_out: int, size: int, chunk: int, calls: int) -> float:
    """GFLOP/s of one 3x3 convolution (padding 1) on ``chunk`` frames, as the oneDNN inference path runs it."""
    x, w, b = blocked_conv(c_in, c_out, size, chunk)
    for _ in range(2):
        torch.mkldnn_convolution(x, w, b, *ARGS)
    t = time.perf_counter()
    for _ in range(calls):
        torch.mkldnn_convolution(x, w, b, *ARGS)
    dt = (time.perf_counter() - t) / calls
    return 2 * c_in * c_out * 9 * size * size * chunk / dt / 1e9


def convs_only(batch: int, chunk: int = 4):
    """A callable that runs only the reference model's four convolutions on ``batch`` clips of 16 frames, ``chunk``
    frames per call on oneDNN blocked tensors as the inference path runs them (pooling, ReLU, the LSTM left out):
    bench/speed.py times it as the row ``conv-ceiling``, in the same interleaved rounds as the models."""
    layers = [blocked_conv(c_in, c_out, size, chunk) for c_in, c_out, size in BLOCKS]
    calls = -(-batch * FRAMES // chunk)

    def run() -> None:
        for x, w, b in layers:
            for _ in range(calls):
                torch.mkldnn_convolution(x, w, b, *ARGS)

    return run


def convs_train(batch: int, chunk: int = 8):
    """A callable that runs only the reference model's four convolutions forward and backward, as a training step
    needs them (the input gradient of every layer but the first, every weight gradient), on ``batch`` clips of 16
    frames, ``chunk`` frames per call on dense channels-last tensors as PyTorch trains them (BatchNorm, ReLU,
    pooling, the LSTM and the optimizer left out): bench/speed.py times it as the training row ``conv-ceiling``,
    the float32 ceiling of a training step of any implementation on these kernels."""
    from cnnlstm._fast.alloc import raise_heap_threshold

    raise_heap_threshold()  # chunk-sized buffers stay in glibc's heap, as in cnnlstm's chunked training
    cl = torch.channels_last
    layers = [
        (
            torch.randn(chunk, c_in, size, size).contiguous(memory_format=cl),
            torch.randn(c_out, c_in, 3, 3).contiguous(memory_format=cl),
            torch.randn(chunk, c_out, size, size).contiguous(memory_format=cl),
            i > 0,
        )
        for i, (c_in, c_out, size) in enumerate(BLOCKS)
    ]
    calls = -(-batch * FRAMES // chunk)
    pad, stride, dil, groups = ARGS

    def run() -> None:
        for x, w, gy, input_grad in layers:
            for _ in range(calls):
                torch.ops.aten.convolution(x, w, None, stride, pad, dil, False, [0, 0], groups)
                torch.ops.aten.convolution_backward(
                    gy, x, w, None, stride, pad, dil, False, [0, 0], groups, [input_grad, True, False]
                )

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunks", default="2,4,8,16")
    args = ap.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]
    got: dict[tuple[int, int], list[float]] = {}
    for _ in range(args.repeats):
        for i, (ci, co, size) in enumerate(BLOCKS):
            for ch in chunks:
                got.setdefault((i, ch), []).append(conv_gflops(ci, co, size, ch, calls=max(2, 64 // ch)))
    table = {f"block{i + 1} chunk {ch}": statistics.median(v) for (i, ch), v in sorted(got.items())}
    per_frame_ms = 0.0
    best = {}
    for i, (ci, co, size) in enumerate(BLOCKS):
        ch, g = max(((ch, statistics.median(got[(i, ch)])) for ch in chunks), key=lambda t: t[1])
        gflop = 2 * ci * co * 9 * size * size / 1e9
        best[f"block{i + 1}"] = {"chunk": ch, "gflops": g, "gflop_per_frame": gflop}
        per_frame_ms += 1e3 * gflop / g
    ceiling = 1e3 / (per_frame_ms * FRAMES)
    result = {"machine": machine(), "gflops": table, "best": best, "ceiling_clips_per_s": ceiling}
    speed = RESULTS / "speed.json"
    if speed.exists():  # the ratio to Keras this ceiling allows, against bench/speed.py's latest Keras figure
        keras = {
            k: v["median"]
            for k, v in json.loads(speed.read_text())["results"].items()
            if k.startswith("keras-tf infer")
        }
        result["ceiling_over_keras"] = {k: ceiling / v for k, v in keras.items()}
    save("conv_ceiling", result)
    print(f"processor {result['machine'].get('processor')}, {torch.get_num_threads()} threads")
    print("GFLOP/s per block (chunk of frames): " + ", ".join(f"{k} {v:.0f}" for k, v in table.items()))
    print(
        f"ceiling from the convolutions alone: {ceiling:.1f} clips/s float32 "
        + (
            "(" + ", ".join(f"{v:.2f}x {k}" for k, v in result.get("ceiling_over_keras", {}).items()) + ")"
            if "ceiling_over_keras" in result
            else ""
        )
    )


if __name__ == "__main__":
    main()
