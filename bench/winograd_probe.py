"""Winograd F(4x4, 3x3) convolutions against oneDNN's direct ones, for a float32 inference chain: a probe of a path
that was tried and not taken (issue 20).

Run: python bench/winograd_probe.py [--frames 4] [--rounds 15]

The reference model's blocks 2-4 (conv3x3 32->64 at 56x56, 64->128 at 28x28, 128->256 at 14x14, each with a bias,
ReLU and a 2x2 max-pool) on a chunk of ``--frames`` frames. Direct: oneDNN's convolution, max-pool and ReLU on
blocked tensors, as ``cnnlstm._fast.onednn`` runs them. Winograd: each 6x6 input tile turned into 36 values by numba
(input transform), 36 GEMMs as one grouped 1x1 oneDNN convolution over channels-last tiles, and numba's output
transform with the bias, the max-pool and ReLU fused in, writing into the next block's zero-bordered input.
Winograd does 4x fewer multiplications; the float64 reference tells how far each lands from the exact result.
Prints each stage's median time alone, the direct block's, and the whole three-block chain of each alternated in
one process (so a slow spell of the machine hits both), with the processor; writes
``bench/results/winograd_probe.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

import numba
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, save

# Lavin & Gray's F(4x4, 3x3): Y = A^T [(G g G^T) * (B^T d B)] A over 6x6 input tiles (a correlation, as Conv2d)
BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0],
      [0, 4, 0, -5, 0, 1]]  # fmt: skip
G = [[Fraction(1, 4), 0, 0], [Fraction(-1, 6)] * 3, [Fraction(-1, 6), Fraction(1, 6), Fraction(-1, 6)],
     [Fraction(1, 24), Fraction(1, 12), Fraction(1, 6)], [Fraction(1, 24), Fraction(-1, 12), Fraction(1, 6)],
     [0, 0, 1]]  # fmt: skip
AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
BLOCKS = [(32, 64, 56), (64, 128, 28), (128, 256, 14)]


def _sum(coefs: list, names: list[str]) -> str:
    """``coefs · names`` as straight-line source (zero terms dropped)."""
    terms = []
    for k, name in zip(coefs, names):
        if k:
            terms.append(f"+{name}" if k == 1 else f"-{name}" if k == -1 else f"+f32({float(k)!r})*{name}")
    return "".join(terms).lstrip("+")


def _input_transform_source() -> str:
    lines = [
        "def input_transform(x, v, th, tw):",
        "    for p in numba.prange(x.shape[0] * th * tw):",
        "        n, r = p // (th * tw), p % (th * tw)",
        "        ty, tx = r // tw, r % tw",
        "        for c in range(x.shape[3]):",
    ]
    lines += [f"            d{i}{j} = x[n, 4 * ty + {i}, 4 * tx + {j}, c]" for i in range(6) for j in range(6)]
    lines += [
        f"            t{i}{j} = {_sum(BT[i], [f'd{k}{j}' for k in range(6)])}" for i in range(6) for j in range(6)
    ]
    lines += [
        f"            v[n, ty, tx, {6 * i + j}, c] = {_sum(BT[j], [f't{i}{k}' for k in range(6)])}"
        for i in range(6)
        for j in range(6)
    ]
    return "\n".join(lines)


def _output_transform_source() -> str:
    lines = [
        "def output_transform(m, bias, out, hp, wp):",
        "    nb, th, tw = m.shape[0], m.shape[1], m.shape[2]",
        "    for p in numba.prange(nb * th * tw):",
        "        n, r = p // (th * tw), p % (th * tw)",
        "        ty, tx = r // tw, r % tw",
        "        for c in range(m.shape[4]):",
    ]
    lines += [f"            m{i}{j} = m[n, ty, tx, {6 * i + j}, c]" for i in range(6) for j in range(6)]
    lines += [
        f"            s{a}{j} = {_sum(AT[a], [f'm{i}{j}' for i in range(6)])}" for a in range(4) for j in range(6)
    ]
    lines += [
        f"            y{a}{b} = {_sum(AT[b], [f's{a}{k}' for k in range(6)])}" for a in range(4) for b in range(4)
    ]
    for u in range(2):
        for w in range(2):
            window = f"y{2 * u}{2 * w}, y{2 * u}{2 * w + 1}), max(y{2 * u + 1}{2 * w}, y{2 * u + 1}{2 * w + 1}"
            lines += [
                f"            q = max(max({window})) + bias[c]",
                f"            if 2 * ty + {u} < hp and 2 * tx + {w} < wp:",
                f"                out[n, 1 + 2 * ty + {u}, 1 + 2 * tx + {w}, c] = q if q > 0 else f32(0)",
            ]
    return "\n".join(lines)


_ns: dict = {"numba": numba, "f32": np.float32}
exec(_input_transform_source(), _ns)  # straight-line transforms generated from the matrices above
exec(_output_transform_source(), _ns)
input_transform = numba.njit(parallel=True)(_ns["input_transform"])
output_transform = numba.njit(parallel=True)(_ns["output_transform"])


def tiles(h: int) -> int:
    return (h + 3) // 4


def padded(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, 4T+2, 4T+2, C)`` zero-bordered, T = ceil(H / 4) tiles."""
    t = tiles(x.shape[2])
    out = torch.zeros(x.shape[0], 4 * t + 2, 4 * t + 2, x.shape[1])
    out[:, 1 : x.shape[2] + 1, 1 : x.shape[3] + 1] = x.permute(0, 2, 3, 1)
    return out


class WinogradBlock:
    """conv3x3 (padding 1) + bias, 2x2 max-pool, ReLU: ``(N, 4T+2, 4T+2, Ci)`` -> the next block's padded input."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, h: int):
        g = torch.tensor([[float(v) for v in row] for row in G], dtype=torch.float64)
        u = torch.einsum("ik,ockl,jl->ijoc", g, w.double(), g)  # (6, 6, Co, Ci): 36 weight matrices
        self.weight = u.reshape(36 * w.shape[0], w.shape[1], 1, 1).float().contiguous()
        self.bias, self.ci, self.co, self.h = b.contiguous(), w.shape[1], w.shape[0], h

    def stages(self, x: torch.Tensor) -> tuple:
        """The three stages as calls on buffers made here, as ``__call__`` runs them."""
        n, t = x.shape[0], tiles(self.h)
        v = torch.empty(n, t, t, 36, self.ci)
        vin = v.view(n, t, t, 36 * self.ci).permute(0, 3, 1, 2)  # channels-last (N, 36·Ci, T, T)
        m = torch.conv2d(vin, self.weight, groups=36).permute(0, 2, 3, 1).contiguous().view(n, t, t, 36, self.co)
        out = torch.zeros(n, 4 * tiles(self.h // 2) + 2, 4 * tiles(self.h // 2) + 2, self.co)
        return (
            lambda: input_transform(x.numpy(), v.numpy(), t, t),
            lambda: torch.conv2d(vin, self.weight, groups=36),
            lambda: output_transform(m.numpy(), self.bias.numpy(), out.numpy(), self.h // 2, self.h // 2),
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[0], tiles(self.h)
        v = torch.empty(n, t, t, 36, self.ci)
        input_transform(x.numpy(), v.numpy(), t, t)
        m = torch.conv2d(v.view(n, t, t, 36 * self.ci).permute(0, 3, 1, 2), self.weight, groups=36)
        m = m.permute(0, 2, 3, 1).contiguous().view(n, t, t, 36, self.co)
        out = torch.zeros(n, 4 * tiles(self.h // 2) + 2, 4 * tiles(self.h // 2) + 2, self.co)
        output_transform(m.numpy(), self.bias.numpy(), out.numpy(), self.h // 2, self.h // 2)
        return out


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
    weights = [(torch.randn(co, ci, 3, 3) / (9 * ci) ** 0.5, torch.randn(co) * 0.1) for ci, co, _ in BLOCKS]
    x = torch.relu(torch.randn(args.frames, 32, 56, 56))
    pad = [1, 1], [1, 1], [1, 1]
    blocked = [(w.to_mkldnn(), b.to_mkldnn()) for w, b in weights]
    wino = [WinogradBlock(w, b, h) for (w, b), (_, _, h) in zip(weights, BLOCKS)]

    def direct() -> torch.Tensor:
        y = x.to_mkldnn()
        for w, b in blocked:
            y = torch.relu_(torch.max_pool2d(torch.mkldnn_convolution(y, w, b, *pad, 1), 2, 2, 0, 1, False))
        return y.to_dense()

    def winograd() -> torch.Tensor:
        y = padded(x)
        for block in wino:
            y = block(y)
        return y[:, 1:8, 1:8].permute(0, 3, 1, 2)

    ref = x.double()
    for w, b in weights:
        ref = torch.relu(torch.max_pool2d(torch.conv2d(ref, w.double(), b.double(), padding=1), 2))
    error = {
        "direct": (direct().double() - ref).abs().max().item(),
        "winograd": (winograd().double() - ref).abs().max().item(),
    }
    result: dict = {"machine": machine(), "frames": args.frames, "max_abs_error_vs_float64": error, "blocks": []}
    result["output_scale"] = ref.abs().max().item()

    inputs = [padded(torch.relu(torch.randn(args.frames, ci, h, h))) for ci, _, h in BLOCKS]
    for (ci, co, h), block, (w, b), xin in zip(BLOCKS, wino, blocked, inputs):
        xb = torch.randn(args.frames, ci, h, h).to_mkldnn()
        it, gemm, ot = block.stages(xin)
        row = {"block": f"{ci}->{co} at {h}x{h}"}
        row["direct_us"] = median_us(
            lambda xb=xb, w=w, b=b: torch.relu_(
                torch.max_pool2d(torch.mkldnn_convolution(xb, w, b, *pad, 1), 2, 2, 0, 1, False)
            ),
            args.rounds,
        )
        row |= {k: median_us(f, args.rounds) for k, f in (("input_us", it), ("gemm_us", gemm), ("output_us", ot))}
        row["winograd_us"] = row["input_us"] + row["gemm_us"] + row["output_us"]
        result["blocks"].append(row)
        print(
            f"{row['block']:>18}: direct {row['direct_us']:6.0f} us; winograd {row['winograd_us']:6.0f} us "
            f"(input {row['input_us']:.0f}, 36 GEMMs {row['gemm_us']:.0f}, output {row['output_us']:.0f}) alone"
        )

    times: dict[str, list[float]] = {"direct": [], "winograd": []}
    for fn in (direct, winograd):
        fn()
    for r in range(args.rounds):
        pair = [("direct", direct), ("winograd", winograd)]
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
