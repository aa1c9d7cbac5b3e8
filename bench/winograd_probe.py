"""Winograd F(4x4, 3x3) blocks (``cnnlstm._fast.winograd``) against oneDNN's direct convolutions, stage by stage.

Run: python bench/winograd_probe.py [--frames 4] [--rounds 15]

The reference model's blocks 2-4 (conv3x3 32->64 at 56x56, 64->128 at 28x28, 128->256 at 14x14, each with a bias,
ReLU and a 2x2 max-pool) on a chunk of ``--frames`` frames. Direct: oneDNN's convolution, max-pool and ReLU on
blocked tensors, as ``cnnlstm._fast.onednn`` runs them without Winograd. Winograd: the library's blocks, numba's
input transform, the 36 GEMMs as one grouped 1x1 oneDNN convolution or by ``torch.bmm`` (both timed; the blocks
keep whichever their first step timed faster), numba's output transform with the bias, max-pool and ReLU fused
in. Prints each stage's median time alone, the direct block's, and the whole three-block chain of each alternated
in one process (so a slow spell of the machine hits both), the distance of each from the float64 result, with the
processor; writes ``bench/results/winograd_probe.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numba
import torch

from cnnlstm._fast import _numba_winograd as kernels
from cnnlstm._fast import winograd

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, save

BLOCKS = [(32, 64, 56), (64, 128, 28), (128, 256, 14)]


def stages(block: winograd.WinogradBlock, x: torch.Tensor, h: int) -> tuple:
    """The block's three stages on ``x`` (its padded input for ``h`` x ``h`` frames) as calls on buffers made
    here, as ``WinogradBlock.__call__`` runs them."""
    n, t = x.shape[0], winograd.tiles(h)
    v = torch.empty(n, t, t, 36 * block.ci)
    m = torch.conv2d(v.permute(0, 3, 1, 2), block.weight, groups=36).permute(0, 2, 3, 1).contiguous()
    wo = 4 * winograd.tiles(h // 2) + 2
    out = torch.zeros(n, wo, wo, block.co)
    forward, back = kernels.input_transform(block.ci), kernels.output_transform(block.co, wo)
    return (
        lambda: forward(x.view(-1).numpy(), v.view(-1).numpy(), n, x.shape[1], x.shape[2], t, t),
        lambda: torch.conv2d(v.permute(0, 3, 1, 2), block.weight, groups=36),
        lambda: torch.bmm(v.view(-1, 36, block.ci).transpose(0, 1), block.matrices),
        lambda: back(
            m.view(-1).numpy(),
            block.bias.numpy(),
            out.view(-1).numpy(),
            n,
            t,
            t,
            h // 2,
            h // 2,
            wo,
            36 * block.co,
            block.co,
        ),
    )


def median_us(fn, rounds: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    torch.manual_seed(0)
    numba.set_num_threads(torch.get_num_threads())
    if not winograd.available():
        sys.exit("numba is not installed (pip install cnnlstm[fast])")
    weights = [(torch.randn(co, ci, 3, 3) / (9 * ci) ** 0.5, torch.randn(co) * 0.1) for ci, co, _ in BLOCKS]
    x = torch.relu(torch.randn(args.frames, 32, 56, 56))
    pad = [1, 1], [1, 1], [1, 1]
    blocked = [(w.to_mkldnn(), b.to_mkldnn()) for w, b in weights]
    wino = [winograd.WinogradBlock(w, b) for w, b in weights]

    def direct() -> torch.Tensor:
        y = x.to_mkldnn()
        for w, b in blocked:
            y = torch.relu_(torch.max_pool2d(torch.mkldnn_convolution(y, w, b, *pad, 1), 2, 2, 0, 1, False))
        return y.to_dense()

    def by_winograd() -> torch.Tensor:
        return winograd.run(wino, x)

    ref = x.double()
    for w, b in weights:
        ref = torch.relu(torch.max_pool2d(torch.conv2d(ref, w.double(), b.double(), padding=1), 2))
    error = {
        "direct": (direct().double() - ref).abs().max().item(),
        "winograd": (by_winograd().double() - ref).abs().max().item(),
    }
    result: dict = {"machine": machine(), "frames": args.frames, "max_abs_error_vs_float64": error, "blocks": []}
    result["output_scale"] = ref.abs().max().item()

    inputs = [winograd.padded(torch.relu(torch.randn(args.frames, ci, h, h))) for ci, _, h in BLOCKS]
    for (ci, co, h), block, (w, b), xin in zip(BLOCKS, wino, blocked, inputs):
        xb = torch.randn(args.frames, ci, h, h).to_mkldnn()
        it, gemm, bmm, ot = stages(block, xin, h)
        row = {"block": f"{ci}->{co} at {h}x{h}"}
        row["direct_us"] = median_us(
            lambda xb=xb, w=w, b=b: torch.relu_(
                torch.max_pool2d(torch.mkldnn_convolution(xb, w, b, *pad, 1), 2, 2, 0, 1, False)
            ),
            args.rounds,
        )
        ways = (("input_us", it), ("gemm_us", gemm), ("bmm_us", bmm), ("output_us", ot))
        row |= {k: median_us(f, args.rounds) for k, f in ways}
        row["winograd_us"] = row["input_us"] + min(row["gemm_us"], row["bmm_us"]) + row["output_us"]
        result["blocks"].append(row)
        print(
            f"{row['block']:>18}: direct {row['direct_us']:6.0f} us; winograd {row['winograd_us']:6.0f} us "
            f"(input {row['input_us']:.0f}, 36 GEMMs {row['gemm_us']:.0f} as a grouped convolution, "
            f"{row['bmm_us']:.0f} by bmm, output {row['output_us']:.0f}) alone"
        )

    times: dict[str, list[float]] = {"direct": [], "winograd": []}
    for fn in (direct, by_winograd):
        fn()
    for r in range(args.rounds):
        pair = [("direct", direct), ("winograd", by_winograd)]
        for name, fn in pair if r % 2 == 0 else pair[::-1]:  # the order reversed every other round
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    chain = {k: statistics.median(v) * 1e6 for k, v in times.items()}
    result["chain_us"] = chain
    print(
        f"three blocks in a row, alternated: direct {chain['direct']:.0f} us, winograd {chain['winograd']:.0f} us "
        f"({chain['direct'] / chain['winograd']:.3f}x); max |error| vs float64: direct {error['direct']:.1e}, "
        f"winograd {error['winograd']:.1e} (outputs up to {result['output_scale']:.2f}); "
        f"{result['machine'].get('processor')}, {torch.get_num_threads()} threads"
    )
    print(f"wrote {save('winograd_probe', result)}")


if __name__ == "__main__":
    main()
