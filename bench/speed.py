"""The reference CNN-LSTM in four implementations, side by side: inference and training clips/s at batch 8 and 32,
peak resident memory of a training step, the float32 peak and the model's FLOPs.

Run: python bench/speed.py [--repeats 5] [--no-keras] [--bf16]

Reference model (issue 5): 16 frames of 3x112x112, 4 blocks conv 3x3 - BatchNorm - ReLU - maxpool 2x2 (32, 64, 128,
256), global average pooling, LSTM 256, Linear 10. Implementations, all with the same trainable parameters:
cnnlstm's default CNNLSTM (as a library; as a library with PyTorch's transparent huge pages turned on,
THP_MEM_ALLOC_ENABLE=1, row cnnlstm-first; and as the cnnlstm command runs it: huge pages and mimalloc
preloaded where cnnlstm[fast] installed it, and with glibc's mmap and trim thresholds raised instead, as the
command runs without it);
plain PyTorch with frames folded into the batch; plain PyTorch with a Python loop over
frames; Keras 3 on TensorFlow with TimeDistributed(CNN) + LSTM (in its own virtual environment, bench/.venv-keras,
made by this script). The row conv-ceiling times the model's four convolutions alone, as cnnlstm's inference path
runs them and, for training, forward and backward as PyTorch trains them, 8 frames a call (bench/conv_ceiling.py):
the float32 ceiling of any implementation on these kernels, measured in the same rounds as the models. Each
measurement is a fresh process: inference WARM_INFER untimed calls, then TIMED_INFER timed ones; training
WARM_TRAIN untimed steps, then TIMED_TRAIN timed ones (the same for Keras), so peak memory is the process's own, and
the repetitions are interleaved: round r runs every implementation once, so a slow spell of the machine spreads over
all of them rather than landing on one. Parameters are compared as Keras counts them: PyTorch's LSTM has a second,
redundant bias vector (b_ih + b_hh is Keras' one
bias), which is left out of the count.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def plain_modules():
    import torch
    from torch import nn

    layers, c_in = [], 3
    for c in (32, 64, 128, 256):
        layers += [
            nn.Conv2d(c_in, c, 3, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]
        c_in = c
    return nn.Sequential(*layers), nn.LSTM(256, 256, batch_first=True), nn.Linear(256, 10), torch


def build(impl: str):
    import torch
    from torch import nn

    if impl == "cnnlstm":
        from cnnlstm import CNNLSTM

        return CNNLSTM(input_shape=(16, 3, 112, 112), num_classes=10)
    cnn, lstm, fc, _ = plain_modules()
    if impl == "user-seq":  # a user's own nn.Sequential backbone handed to the library (issue 20)
        from cnnlstm import CNNLSTM

        return CNNLSTM(input_shape=(16, 3, 112, 112), num_classes=10, backbone=cnn)

    class Folded(nn.Module):
        def __init__(self):
            super().__init__()
            self.cnn, self.lstm, self.fc = cnn, lstm, fc

        def forward(self, x):  # (N, T, C, H, W)
            n, t = x.shape[:2]
            f = self.cnn(x.flatten(0, 1)).mean(dim=(2, 3)).unflatten(0, (n, t))  # (N, T, 256)
            return self.fc(self.lstm(f)[0][:, -1])

    class Loop(Folded):
        def forward(self, x):
            f = torch.stack([self.cnn(x[:, i]).mean(dim=(2, 3)) for i in range(x.shape[1])], dim=1)
            return self.fc(self.lstm(f)[0][:, -1])

    return {"plain-folded": Folded, "plain-loop": Loop}[impl]()


# untimed training steps first: oneDNN primitives, Adam's state and the allocator's heap are built. Training runs
# thousands of steps, so the timed ones are the steady state's: in plain python (glibc) the chunked path's steps
# sped up until the 4th-5th (clips/s at batch 8 step by step: 4.5, 13.2, 14.7, 15.8, 15.8, 16.5, then flat),
# the command's (mimalloc) from the 2nd, Keras' from the 2nd
WARM_TRAIN = 6
TIMED_TRAIN = 3  # timed training steps per process
WARM_INFER = 2  # untimed inference calls per process: the first builds the folded copy and traces Keras' graph
TIMED_INFER = 5  # timed inference calls per process


def timed(f, warm: int, n: int, faults: list | None = None) -> list[float]:
    """Seconds of each of ``n`` calls of ``f`` after ``warm`` untimed ones; each timed call's minor page faults
    appended to ``faults`` when given (memory the allocator mapped or handed back and touched again)."""
    for _ in range(warm):
        f()
    times = []
    for _ in range(n):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
        if faults is not None:
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return times


def run_torch(impl: str, what: str, batch: int, repeats: int) -> dict:
    import contextlib

    import torch

    if impl == "conv-ceiling":  # the four convolutions alone: the float32 ceiling, timed like a model
        from conv_ceiling import convs_only, convs_train

        run, warm = (convs_only(batch), WARM_INFER) if what == "infer" else (convs_train(batch), WARM_TRAIN)
        return {
            "times": timed(run, warm, repeats),
            "trainable": None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    bf16 = impl.endswith("-bf16")  # the opt-in lower-precision path: bfloat16 autocast (Lightning's bf16-mixed)
    if impl == "user-seq-tuned":  # the documented opt-in call, first thing in the user's script
        import cnnlstm

        if not cnnlstm.tune_malloc():
            raise SystemExit("cnnlstm.tune_malloc() changed nothing in this process")
    base = "user-seq" if impl.startswith("user-seq") else "cnnlstm" if impl.startswith("cnnlstm") else impl
    model = build(base)  # the -first/-cmd/-bf16/-tuned/-run rows: the same model, run another way
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()  # the -bf16 rows
    if impl.endswith("-auto"):  # precision="auto": bfloat16 where this CPU computes it natively, else float32
        cast = model.autocast("auto")
    x = torch.randn(batch, 16, 3, 112, 112)
    y = torch.zeros(batch, dtype=torch.long)
    faults: list[int] = []
    if what == "infer":
        model.eval()
        with torch.inference_mode(), cast:  # model.autocast("bf16") is this autocast
            times = timed(lambda: model(x), WARM_INFER, repeats, faults)
    else:
        model.train()
        opt = torch.optim.Adam(model.parameters())

        def step() -> None:
            opt.zero_grad()
            with cast:
                loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()

        times = timed(step, WARM_TRAIN, repeats, faults)
    # PyTorch's LSTM keeps two bias vectors (b_ih + b_hh) where Keras keeps their sum: count one, as Keras does
    trainable = sum(p.numel() for n, p in model.named_parameters() if "bias_hh" not in n)
    return {
        "times": times,
        "trainable": trainable,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "faults": faults,
    }


def flops_per_clip() -> dict:
    """Forward FLOPs (multiply-add = 2) of the reference model, per clip, with the arithmetic."""
    parts, h, c_in, total = [], 112, 3, 0
    for c in (32, 64, 128, 256):
        f = 2 * h * h * c * c_in * 9 * 16
        parts.append(f"conv {c_in}->{c} at {h}x{h}: 2*{h}*{h}*{c}*{c_in}*9*16 frames = {f / 1e9:.3f} GFLOP")
        total += f
        h //= 2
        c_in = c
    lstm = 2 * 16 * 4 * 256 * (256 + 256)
    parts.append(f"LSTM: 2*16 steps*4 gates*256*(256+256) = {lstm / 1e9:.4f} GFLOP")
    return {"gflop": (total + lstm) / 1e9, "conv_share": total / (total + lstm), "arithmetic": parts}


def float32_peak(repeats: int = 5) -> dict[str, float]:
    """The machine's float32 GFLOP/s: the best of an MKL matrix product and a oneDNN 3x3 convolution.

    Both are measured because on this build they differ: MKL's 2048x2048 product reached 178 GFLOP/s on an
    AMD EPYC where oneDNN's own AVX-512 convolution kernels reached 232, so a model of convolutions can pass
    the "matmul peak" (as Keras and cnnlstm did, at 120% of it) and the percentages would mean nothing.
    """
    import torch

    def best(f) -> float:
        return min(timed(f, 1, repeats))

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    x = torch.randn(8, 256, 56, 56).to(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).eval()
    with torch.no_grad():
        mm = 2 * 2048**3 / best(lambda: a @ b) / 1e9
        cv = 2 * 8 * 56 * 56 * 256 * 256 * 9 / best(lambda: conv(x)) / 1e9
    return {"matmul_mkl": mm, "conv3x3_onednn": cv, "peak": max(mm, cv)}


def cpu(m: dict) -> str:
    """The processor as :func:`_common.machine` read it: its name, with family and model where lscpu gave them."""
    fam = f" (family {m['cpu_family']}, model {m.get('cpu_model')})" if "cpu_family" in m else ""
    return f"{m.get('processor')}{fam}"


def chart(result: dict) -> Path:
    """Grouped bars: clips/s of each implementation, inference and training at each batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from _common import RESULTS

    res = result["results"]
    impls = list(dict.fromkeys(k.split()[0] for k in res))
    cases = list(dict.fromkeys(" ".join(k.split()[1:]) for k in res))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(impls)
    for i, impl in enumerate(impls):
        xs = [c + (i - (len(impls) - 1) / 2) * width for c in range(len(cases))]
        got = [(x, res[f"{impl} {case}"]["median"]) for x, case in zip(xs, cases) if f"{impl} {case}" in res]
        label = "convolutions alone (ceiling)" if impl == "conv-ceiling" else impl
        ax.bar([x for x, _ in got], [v for _, v in got], width, label=label)
        for x, v in got:
            ax.text(x, v, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(cases)), [c.replace("infer", "inference").replace("b", "batch ") for c in cases])
    ax.set_ylabel("clips/s (median)")
    m = result["machine"]
    ax.set_title(
        f"reference model, 16x3x112x112 clips; {cpu(m)}, {m.get('cores')} cores, torch {m.get('torch')}",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = RESULTS / "speed.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def keras_python() -> Path | None:
    py = HERE / ".venv-keras" / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(HERE / ".venv-keras")], check=True)
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", "tensorflow-cpu", "keras"])
        if r.returncode:
            return None
    return py


def _measure(impl: str, what: str, batch: int, kpy: Path | None) -> dict | None:
    """Warmed-up timed steps of ``impl`` in a fresh process: {"times", "trainable", "peak_rss_mb"}."""
    n, warm = (TIMED_INFER, WARM_INFER) if what == "infer" else (TIMED_TRAIN, WARM_TRAIN)
    if impl == "keras-tf":
        cmd = [str(kpy), str(HERE / "_keras_ref.py"), what, str(batch), str(n), str(warm)]
    elif impl == "user-seq-run":  # the user's script through the launcher: `cnnlstm run script.py ...`
        cmd = [sys.executable, "-m", "cnnlstm.cli", "run", __file__, "--child", impl, what, str(batch), str(n)]
    else:
        cmd = [sys.executable, __file__, "--child", impl, what, str(batch), str(n)]
    # every row starts from the same environment, without allocator settings of the shell that runs this
    tuning = ("LD_PRELOAD", "MALLOC_", "MIMALLOC_", "CNNLSTM_", "THP_MEM_ALLOC_ENABLE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(tuning)}
    if impl.startswith(("cnnlstm-cmd", "cnnlstm-first")):  # huge pages, as the cnnlstm command asks for them
        from cnnlstm._fast.alloc import GLIBC_THRESHOLDS, command_env, huge_pages_available, mimalloc_library

        if huge_pages_available():
            env["THP_MEM_ALLOC_ENABLE"] = "1"
    if impl.startswith("cnnlstm-cmd"):  # the library as the cnnlstm command runs it: re-exec'd with an allocator
        if impl == "cnnlstm-cmd-glibc":  # as the command runs without cnnlstm[fast]
            env.update(GLIBC_THRESHOLDS, CNNLSTM_MALLOC="glibc")
        else:
            if mimalloc_library() is None:
                print(f"{impl}: cmeel-mimalloc is not installed (pip install -e .[fast]): glibc's thresholds instead")
            env = command_env(env) or env
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        print(f"{impl} {what} batch {batch} failed: {out.stderr[-500:]}")
        return None
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return {"allocator": env.get("CNNLSTM_MALLOC", "default"), **got}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-keras", action="store_true")
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--bf16", action="store_true", help="Also the opt-in bfloat16 path (as the command runs it).")
    ap.add_argument(
        "--impls", default=None, help="Only these implementations, comma-separated (e.g. cnnlstm-cmd,keras-tf)."
    )
    ap.add_argument("--what", default="infer,train", help="infer, train or both (the default), comma-separated.")
    ap.add_argument("--out", help="Results file name in bench/results (default speed, or speed_subset with --impls).")
    ap.add_argument("--chart-only", action="store_true", help="Redraw speed.png from bench/results/speed.json.")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.chart_only:
        print(chart(json.loads((HERE / "results" / "speed.json").read_text())))
        return
    if args.child:
        impl, what, batch, repeats = args.child
        print(json.dumps(run_torch(impl, what, int(batch), int(repeats))))
        return
    from _common import machine, save, summary

    impls = [
        "cnnlstm",
        "cnnlstm-first",
        "cnnlstm-cmd",
        "cnnlstm-cmd-glibc",
        "user-seq",
        "user-seq-tuned",
        "user-seq-run",
        "plain-folded",
        "plain-loop",
        "conv-ceiling",
    ]
    if args.bf16 or "cnnlstm-cmd-bf16" in (args.impls or ""):
        impls.append("cnnlstm-cmd-bf16")
    if args.bf16 or "cnnlstm-cmd-auto" in (args.impls or ""):
        impls.append("cnnlstm-cmd-auto")  # inference only: precision="auto" is an inference setting
    kpy = None if args.no_keras else keras_python()
    if kpy:
        impls.append("keras-tf")
    if args.impls:
        impls = [i for i in impls if i in args.impls.split(",")]
    results: dict = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        for what in [w for w in ("infer", "train") if w in args.what.split(",")]:
            reps = args.repeats if what == "infer" else max(2, args.repeats // 2)
            todo = [i for i in impls if what == "infer" or i != "cnnlstm-cmd-auto"]  # "auto": an inference setting
            got: dict[str, list[dict]] = {impl: [] for impl in todo}
            # interleaved: round r times each implementation once, in a fresh process (warmed up, then timed
            # steps), starting one place further each round, so a slow spell of the machine spreads over all
            for r in range(reps):
                for impl in todo[r % len(todo) :] + todo[: r % len(todo)]:
                    one = _measure(impl, what, batch, kpy)
                    if one is not None:
                        got[impl].append(one)
            for impl in todo:
                if not got[impl]:
                    continue
                clips = [batch / t for one in got[impl] for t in one["times"]]
                rss = max(one["peak_rss_mb"] for one in got[impl])
                trainable = got[impl][0]["trainable"]
                faults = [f for one in got[impl] for f in one.get("faults", [])]  # none from Keras' own venv
                results[f"{impl} {what} b{batch}"] = {
                    **summary(clips),
                    "allocator": got[impl][0]["allocator"],
                    "trainable": trainable,
                    "peak_rss_mb": rss,
                    "faults_per_call": statistics.median(faults) if faults else None,
                }
                print(
                    f"{impl:<16} {what:<5} batch {batch:>2}: {summary(clips)['median']:7.2f} clips/s "
                    f"(min {min(clips):.2f}, max {max(clips):.2f}, n {len(clips)}), peak RSS {rss:.0f} MB, "
                    + (f"faults/call {statistics.median(faults):,.0f}, " if faults else "")
                    + (f"trainable {trainable:,}" if trainable else "convolutions only"),
                    flush=True,
                )
    params = {k.split()[0]: v["trainable"] for k, v in results.items() if v["trainable"] is not None}
    if len(set(params.values())) != 1:
        raise SystemExit(f"implementations differ in trainable parameters: {params}")
    fl = flops_per_clip()
    peaks = float32_peak()
    peak = peaks["peak"]
    for k, v in results.items():  # training counts forward + backward as 3x the forward FLOPs
        v["pct_of_fp32_peak"] = 100 * v["median"] * fl["gflop"] * (1 if " infer " in k else 3) / peak
    protocol = {
        "warm_infer_calls": WARM_INFER,
        "timed_infer_calls": TIMED_INFER,
        "infer_processes": args.repeats,
        "warm_train_steps": WARM_TRAIN,
        "timed_train_steps": TIMED_TRAIN,
        "train_processes": max(2, args.repeats // 2),
    }
    result = {
        "machine": machine(),
        "protocol": protocol,
        "flops": fl,
        "fp32_gflops": peaks,
        "results": results,
        "trainable_params": params,
    }
    save(args.out or ("speed" if not args.impls else "speed_subset"), result)
    if not args.impls:
        print(f"chart: {chart(result)}")
    print(
        f"processor {cpu(result['machine'])}, float32 peak {peak:.0f} GFLOP/s (MKL matmul "
        f"{peaks['matmul_mkl']:.0f}, oneDNN 3x3 conv {peaks['conv3x3_onednn']:.0f}), "
        f"{fl['gflop']:.2f} GFLOP per clip forward ({100 * fl['conv_share']:.1f}% in convolutions)"
    )
    print(f"trainable parameters, every implementation: {next(iter(params.values())):,}")


if __name__ == "__main__":
    main()
