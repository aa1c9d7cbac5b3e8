"""The private PyTorch call of cnnlstm's inference plan against the public alternatives, side by side in one run.

Run: python bench/private_apis.py [--rounds 12] [--chunk 4]

The reference model (16 frames of 3x112x112, 4 blocks conv 3x3 - BatchNorm - ReLU - maxpool 2x2 of 32..256
channels, global average pooling, LSTM 256, Linear 10) at batch 8, inference without gradients. Every row runs the
same weights and the same LSTM and Linear on the same clips; only the per-frame CNN's path differs, each over the
128 folded frames in chunks of ``--chunk`` frames:

* ``plan``: cnnlstm's own inference plan, ``model(x)`` (BatchNorm folded, the convolution chain on oneDNN's blocked
  tensors; ``src/cnnlstm/_fast/onednn.py``).
* ``onednn-reorder``: that chain with each convolution's weights reordered once into oneDNN's blocked layout by the
  private ``torch._C._nn.mkldnn_reorder_conv2d_weight``.
* ``onednn-plain``: the same chain, the weights handed over in plain layout (public ``Tensor.to_mkldnn`` only), so
  oneDNN reorders them on every call. The ratio of these two is what the private call earns.
* ``dense-cl``: no oneDNN tensors: the folded copy run on dense ``channels_last`` frames (public API only).
* ``fx-optimize``: ``torch.fx.experimental.optimization.optimize_for_inference`` on the CNN as a plain
  ``nn.Sequential`` (folds BatchNorm, converts to oneDNN modules through ``torch.utils.mkldnn``).
* ``compile-freezing``: ``torch.compile`` (default mode) with ``torch._inductor.config.freezing = True``, the chunk
  shape static; the first calls (compilation) are untimed, their seconds reported.

Repetitions are interleaved: each round runs every row once, so a slow spell of the machine (shared, 2 cores)
spreads over all rows. Prints and writes ``bench/results/private_apis.md`` and ``.json`` with the processor.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, machine, save, summary

BATCH, T, SIZE = 8, 16, 112


def _chunked(cnn, chunk: int, layout=None):
    def frames_to_maps(frames: torch.Tensor) -> torch.Tensor:  # (N*T, 3, H, W) -> (N*T, 256, h, w)
        parts = [cnn(c if layout is None else c.contiguous(memory_format=layout)) for c in frames.split(chunk)]
        return torch.cat(parts)

    return frames_to_maps


def _rows(model, chunk: int) -> tuple[dict, dict]:
    """name -> clips (N, T, C, H, W) -> logits; and notes (compile time, failures)."""
    from torch.fx.experimental.optimization import optimize_for_inference

    from cnnlstm._fast.plan import folded_copy, leaves

    cnn = model.backbone.module
    plain = nn.Sequential(*leaves(copy.deepcopy(cnn))).eval()

    def tail(frames_to_maps):
        def run(x):
            n, t = x.shape[:2]
            maps = frames_to_maps(x.flatten(0, 1)).unflatten(0, (n, t))  # (N, T, 256, h, w)
            return model.head(model.rnn(model.bridge(maps))[0])

        return run

    folded = folded_copy(cnn)
    rows = {
        "plan": model,
        "onednn-reorder": tail(_chunked(_prefix(folded, reorder=True), chunk)),
        "onednn-plain": tail(_chunked(_prefix(folded, reorder=False), chunk)),
        "dense-cl": tail(_chunked(folded, chunk, torch.channels_last)),
        "fx-optimize": tail(_chunked(optimize_for_inference(copy.deepcopy(plain)), chunk)),
    }
    notes = {}
    try:
        import torch._inductor.config as inductor

        inductor.freezing = True
        compiled = torch.compile(copy.deepcopy(plain))
        t0 = time.perf_counter()
        with torch.no_grad():
            compiled(torch.randn(chunk, 3, SIZE, SIZE))
        notes["compile-freezing"] = f"first call (compilation) {time.perf_counter() - t0:.1f} s"
        rows["compile-freezing"] = tail(_chunked(compiled, chunk))
    except Exception as e:  # record why, measure the others
        notes["compile-freezing"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return rows, notes


def _prefix(folded: nn.Module, reorder: bool):
    """The oneDNN prefix of the folded copy, its convolution weights reordered once into oneDNN's blocked layout by
    the private ``torch._C._nn.mkldnn_reorder_conv2d_weight`` (``reorder``) or handed over in plain layout."""
    from cnnlstm._fast.onednn import OneDNNPrefix
    from cnnlstm._fast.plan import leaves

    prefix = OneDNNPrefix(leaves(folded))
    convs = iter(m for m in folded.modules() if isinstance(m, nn.Conv2d))
    steps = []
    for kind, a in prefix.steps:
        if kind == "conv":
            w = next(convs).weight.detach().contiguous().to_mkldnn()
            w = torch._C._nn.mkldnn_reorder_conv2d_weight(w, *a[2:]) if reorder else w
            a = (w, *a[1:])
        steps.append((kind, a))
    prefix.steps = steps
    return prefix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--chunk", type=int, default=4, help="frames per CNN call for every row")
    args = ap.parse_args()
    from cnnlstm import CNNLSTM

    torch.manual_seed(0)
    model = CNNLSTM(input_shape=(T, 3, SIZE, SIZE), num_classes=10, chunk_size=args.chunk).eval()
    for m in model.modules():  # non-trivial running statistics, so folding matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(BATCH, T, 3, SIZE, SIZE)
    info = machine()
    print(f"{info.get('processor')}, {info['cores']} cores, torch {info.get('torch')}, {info.get('threads')} threads")
    with torch.no_grad():
        rows, notes = _rows(model, args.chunk)
        ref = model(x)
        diffs = {name: float((run(x) - ref).abs().max()) for name, run in rows.items()}
        for run in rows.values():  # warm: primitives, folded copies, caches
            run(x)
        times: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.rounds):
            for name, run in rows.items():
                t0 = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - t0)
    report(info, args, rows, times, diffs, notes)


def report(info: dict, args, rows: dict, times: dict, diffs: dict, notes: dict) -> None:
    clips = {name: [BATCH / t for t in ts] for name, ts in times.items()}
    base = statistics.median(clips["plan"])
    lines = [
        f"Processor: {info.get('processor')} ({info['cores']} cores, flags {' '.join(info.get('flags', []))}); "
        f"torch {info.get('torch')}, {info.get('threads')} threads. Batch {BATCH} clips of {T}x3x{SIZE}x{SIZE}, "
        f"inference, CNN in chunks of {args.chunk} frames, {args.rounds} interleaved rounds.",
        "",
        "| row | clips/s median (min-max) | vs plan | max abs diff vs plan |",
        "|---|---|---|---|",
    ]
    for name, c in clips.items():
        med = statistics.median(c)
        lines.append(f"| {name} | {med:.1f} ({min(c):.1f}-{max(c):.1f}) | {med / base:.2f}x | {diffs[name]:.1e} |")
    lines += [""] + [f"- {k}: {v}" for k, v in notes.items()]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "private_apis.md").write_text("# bench/private_apis.py\n\n" + text + "\n")
    save("private_apis", {"machine": info, "clips_per_s": {k: summary(v) for k, v in clips.items()}, "notes": notes})


if __name__ == "__main__":
    main()
