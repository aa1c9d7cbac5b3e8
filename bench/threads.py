"""Threads for training, alone and beside a busy process: the measurement behind ``cnnlstm._fast.threads``.

For each of the library's presets at a size users train (a 24-step forecast, series of 24, 100, 150 and 427
steps, the video default on 8 frames of 64x64), the median time of a training step (forward, backward, AdamW) on
1 and 2 threads, in fresh processes, with OpenMP's default wait policy, with ``OMP_WAIT_POLICY=PASSIVE`` and with
shorter spins (``GOMP_SPINCOUNT``), on an idle machine and beside a process that keeps one core busy.

    python bench/threads.py            # writes results/threads.json and results/threads.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _common import RESULTS, machine, save

# name: (preset, input shape of one batch, model keywords)
MODELS = {
    "forecast 24 steps": ("forecast", (16, 24, 1), {"head": "forecast", "num_classes": 1,
                                                    "head_options": {"horizon": 12}}),
    "series 24 steps": ("series", (8, 24, 1), {"num_classes": 2}),
    "series 100 x 6": ("series", (8, 100, 6), {"num_classes": 4}),
    "series 150 steps": ("series", (8, 150, 1), {"num_classes": 2}),
    "series 427 steps": ("series", (8, 427, 1), {"num_classes": 6}),
    "video 8 x 64 x 64": ("video", (8, 8, 3, 64, 64), {"num_classes": 4}),
}  # fmt: skip


def child(threads: int, steps: int, models: list[str]) -> None:
    """Print ``{model: [flops, median seconds a step]}`` as JSON, on ``threads`` threads."""
    import torch

    from cnnlstm import CNNLSTM
    from cnnlstm._fast.threads import step_flops
    from cnnlstm.presets import preset

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    out = {}
    for name in models:
        kind, shape, kw = MODELS[name]
        layout = "NTCHW" if kind == "video" else "NTF"
        size = shape[1:] if kind != "series" else (None, shape[-1])
        model = CNNLSTM(**{**preset(kind), **kw}, input_shape=size, layout=layout)
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        x = torch.randn(shape)
        times = []
        for i in range(steps + 3):  # three to warm up
            t0 = time.perf_counter()
            opt.zero_grad()
            model(x).float().pow(2).mean().backward()
            opt.step()
            if i >= 3:
                times.append(time.perf_counter() - t0)
        out[name] = [step_flops(model, x), statistics.median(times)]
    print(json.dumps(out))


# how waiting OpenMP threads behave: OpenMP's default (spin a while, then sleep), sleep at once, spin less
POLICIES = {"": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "spin 10k": {"GOMP_SPINCOUNT": "10000"},
            "spin 100k": {"GOMP_SPINCOUNT": "100000"}}  # fmt: skip


def measure(threads: int, policy: str, steps: int, models: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(POLICIES[policy])
    cmd = [sys.executable, __file__, "--child", str(threads), "--steps", str(steps), "--models", ",".join(models)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--policies", default=",".join(POLICIES), help="Wait policies: " + ", ".join(map(repr, POLICIES)))
    ap.add_argument("--models", default=",".join(MODELS), help="Of: " + ", ".join(MODELS))
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    models = args.models.split(",")
    if args.child:
        return child(args.child, args.steps, models)
    rows: dict[str, dict] = {}
    for busy in (False, True):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for policy in args.policies.split(","):
                for threads in (1, 2):
                    if threads == 1 and policy:  # one thread never waits for another: the policy does not matter
                        continue
                    label = f"{'busy' if busy else 'idle'}, {threads} thread{'s' * (threads > 1)}"
                    label += f", {policy}" if policy else ""
                    print(label, flush=True)
                    for name, (flops, seconds) in measure(threads, policy, args.steps, models).items():
                        rows.setdefault(name, {"mflop": round(flops / 1e6, 1)})[label] = round(seconds * 1e3, 2)
        finally:
            if spinner is not None:
                spinner.kill()
    here = machine()
    save("threads", {"machine": here, "steps": args.steps, "ms_per_step": rows})
    labels = [k for k in next(iter(rows.values())) if k != "mflop"]
    lines = [
        "# Training threads, alone and beside a busy process",
        "",
        f"`python bench/threads.py` on {here.get('processor')}, {here.get('cores')} cores: milliseconds a "
        "training step (median of fresh processes' steps; busy: another process keeps one core busy).",
        "",
        "| model | MFLOP a step | " + " | ".join(labels) + " |",
        "|---|---|" + "---|" * len(labels),
        *[f"| {n} | {r['mflop']} | " + " | ".join(f"{r[k]:.1f}" for k in labels) + " |" for n, r in rows.items()],
    ]
    (RESULTS / "threads.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
