"""numba's one-pass BatchNorm - ReLU - max-pool kernels against PyTorch's kernels, in training steps side by side.

Run: python bench/pool_kernels.py [--batch 8] [--rounds 10] [--path chunks|whole]

The reference model of bench/speed.py with a user's own ``nn.Sequential`` backbone, training steps (Adam) in one
process, alternating ``cnnlstm._fast.pool_kernels.ENABLED`` True / False step by step (an untimed step after each
switch, the order reversed every other round), so a slow spell of the machine hits both. ``--path chunks`` is a
plain ``python``'s chunked path, ``whole`` the whole batch at once after ``cnnlstm.tune_malloc()`` (the
command's path). Prints the median clips/s of each and the median of the paired ratios, with the processor; writes
``bench/results/pool_kernels.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, save
from speed import build


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--path", choices=("chunks", "whole"), default="chunks")
    args = ap.parse_args()
    from cnnlstm._fast import plan, pool_kernels

    if not pool_kernels.available():
        sys.exit("numba is not installed (pip install cnnlstm[fast])")
    chunks = args.path == "chunks"
    if not chunks:  # the whole batch at once, in a process whose allocator keeps freed memory (as the command's)
        import cnnlstm

        cnnlstm.tune_malloc()
    plan.train_in_chunks = lambda frames: chunks and frames.dtype == torch.float32
    torch.manual_seed(0)
    model = build("user-seq").train()
    x = torch.randn(args.batch, 16, 3, 112, 112)
    y = torch.zeros(args.batch, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters())

    def step() -> float:
        t = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        return time.perf_counter() - t

    for _ in range(5):  # glibc's heap settles in the chunked path's first steps
        step()
    times: dict[str, list[float]] = {"numba": [], "pytorch": []}
    for r in range(args.rounds):
        for name in ("numba", "pytorch") if r % 2 == 0 else ("pytorch", "numba"):
            pool_kernels.ENABLED = name == "numba"
            step()  # untimed after the switch
            times[name].append(step())
    ratio = statistics.median(p / n for n, p in zip(times["numba"], times["pytorch"], strict=True))
    result = {
        "machine": machine(),
        "batch": args.batch,
        "path": args.path,
        "rounds": args.rounds,
        "clips_per_s": {k: args.batch / statistics.median(v) for k, v in times.items()},
        "speedup_numba_over_pytorch": ratio,
    }
    for k, v in result["clips_per_s"].items():
        print(f"{k:8s} {args.path} batch {args.batch}: {v:.2f} clips/s")
    print(f"numba / pytorch: {ratio:.3f}x (median of {args.rounds} paired steps), {result['machine']['processor']}")
    save(f"pool_kernels_{args.path}_b{args.batch}", result)


if __name__ == "__main__":
    main()
