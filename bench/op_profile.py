"""Where the time goes: PyTorch's per-op profile of one inference and one training step of the reference model.

Run: python bench/op_profile.py [--impl cnnlstm] [--batch 8] [--top 10] [--keras]

Self CPU time per ATen op (torch.profiler), and the convolutions' GFLOP/s against the float32 peak that
bench/speed.py measures, so the ceiling is plain: if the convolutions already run near the peak, only the
ops around them (pooling, ReLU, BatchNorm, copies) are left to win. Run it as the command runs training
(the allocator of cnnlstm._fast.alloc.fast_malloc_env) to profile what the command does. Writes
bench/results/op_profile.json. ``--keras`` adds TensorFlow's profile of the Keras ``TimeDistributed``
reference (in bench/speed.py's own virtual environment): thread time per TF op type over its compute threads.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, save
from speed import HERE, build, float32_peak, flops_per_clip, keras_python

STEPS = 3  # profiled steps; times are per step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", default="cnnlstm", choices=["cnnlstm", "plain-folded", "plain-loop"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--keras", action="store_true", help="Also profile the Keras 3 / TensorFlow reference.")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build(args.impl)
    x, y = torch.randn(args.batch, 16, 3, 112, 112), torch.randint(0, 10, (args.batch,))
    opt = torch.optim.Adam(model.parameters())

    def train() -> None:
        model.train()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def infer() -> None:
        model.eval()
        with torch.inference_mode():
            model(x)

    peak = float32_peak()["peak"]
    gflop = flops_per_clip()["gflop"] * args.batch
    result: dict = {"machine": machine(), "impl": args.impl, "batch": args.batch, "fp32_peak_gflops": peak}
    for name, step in (("inference", infer), ("training", train)):
        step()
        step()  # warm: oneDNN primitives and the conv-BN-folded copy are built
        with profile(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(STEPS):
                step()
        ops = sorted(p.key_averages(), key=lambda e: -e.self_cpu_time_total)
        for e in ops:
            e.self_cpu_time_total /= STEPS  # per step
        total = sum(e.self_cpu_time_total for e in ops) / 1e6
        conv_fwd = sum(e.self_cpu_time_total for e in ops if e.key == "aten::mkldnn_convolution") / 1e6
        conv_bwd = sum(e.self_cpu_time_total for e in ops if e.key == "aten::convolution_backward") / 1e6
        rows = [
            {"op": e.key, "ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / 1e6 / total}
            for e in ops[: args.top]
        ]
        result[name] = {
            "ms": total * 1e3,
            "conv_forward_gflops": gflop / conv_fwd if conv_fwd else None,
            "conv_backward_gflops": 2 * gflop / conv_bwd if conv_bwd else None,
            "conv_share": (conv_fwd + conv_bwd) / total,
            "ops": rows,
        }
        r = result[name]
        print(
            f"== {name}, batch {args.batch}: {r['ms']:.0f} ms self CPU, convolutions {100 * r['conv_share']:.0f}%; "
            f"conv forward {r['conv_forward_gflops']:.0f} GFLOP/s"
            + (f", backward {r['conv_backward_gflops']:.0f}" if conv_bwd else "")
            + f" (float32 peak {peak:.0f})"
        )
        for row in rows:
            print(f"  {row['op']:42s} {row['ms']:8.1f} ms {100 * row['share']:5.1f}%")
    if args.keras and (kpy := keras_python()):
        out = subprocess.run(
            [str(kpy), str(HERE / "_keras_ref.py"), "profile", str(args.batch)], capture_output=True, text=True
        )
        if out.returncode:
            raise SystemExit(f"the Keras profile failed:\n{out.stderr[-2000:]}")
        result["keras"] = json.loads(out.stdout.strip().splitlines()[-1])
        for name, r in result["keras"]["profile"].items():
            total = sum(o["ms"] for o in r["ops"].values())
            conv = sum(o["ms"] for k, o in r["ops"].items() if "Conv2D" in k and "Backprop" not in k)
            print(
                f"== Keras/TF {name}, batch {args.batch}: {r['wall_ms']:.0f} ms wall, {total:.0f} ms of op time over "
                f"{r['threads']} compute threads; forward convolutions {gflop / (conv / 1e3 / r['threads']):.0f} "
                "GFLOP/s (thread time x threads: TF runs two frames' convolutions at once, one on each compute thread)"
            )
            for k, o in list(r["ops"].items())[: args.top]:
                print(f"  {k:42s} {o['ms']:8.1f} ms {100 * o['ms'] / total:5.1f}%  {o['calls']} calls")
    save("op_profile", result)


if __name__ == "__main__":
    main()
