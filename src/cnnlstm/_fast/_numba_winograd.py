"""numba kernels of :mod:`.winograd` (imported only where numba is installed): Winograd F(4x4, 3x3)'s input and
output transforms as straight-line code generated from the transform matrices, one kernel per channel count.

The channel count (and the output's row length) are constants of each kernel and every index is unsigned: with
them runtime values, or with numba's signed (wraparound) indices, LLVM cannot prove a kernel's loads and stores
apart and leaves the loop over channels scalar, 8x slower (``bench/winograd_probe.py``, measured). The source is
compiled as if it were this file's, so numba caches each kernel on disk (:func:`.threads.numba_cache_dir`, outside
the package; a few seconds once per channel count and frame size, then loaded)."""

from __future__ import annotations

import functools
from fractions import Fraction

import numba
import numpy as np

from .threads import cached_njit

__all__ = ["AT", "BT", "G", "input_transform", "output_full", "output_transform"]

# Lavin & Gray's F(4x4, 3x3): Y = A^T [(G g G^T) ⊙ (B^T d B)] A over 6x6 input tiles, a correlation as Conv2d's
BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0],
      [0, 4, 0, -5, 0, 1]]  # fmt: skip
G = [[Fraction(1, 4), 0, 0], [Fraction(-1, 6)] * 3, [Fraction(-1, 6), Fraction(1, 6), Fraction(-1, 6)],
     [Fraction(1, 24), Fraction(1, 12), Fraction(1, 6)], [Fraction(1, 24), Fraction(-1, 12), Fraction(1, 6)],
     [0, 0, 1]]  # fmt: skip
AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]


def _sum(coefs: list, names: list[str]) -> str:
    """``coefs · names`` as source, zero terms dropped."""
    terms = []
    for k, name in zip(coefs, names):
        if k:
            terms.append(f"+{name}" if k == 1 else f"-{name}" if k == -1 else f"+f32({float(k)!r})*{name}")
    return "".join(terms).lstrip("+")


def _u(k: int) -> str:
    return f"np.uint64({k})"


def input_source(c: int) -> str:
    """Source of ``input_transform_c{c}(x, v, n_img, hp, wp, th, tw)`` over flat float32 arrays: the padded frames
    x ``(n_img, hp, wp, c)`` (channels last, a zero border of 1 and room for whole tiles) → v ``(n_img, th, tw,
    36, c)``, ``B^T d B`` of each 6x6 tile ``d`` at rows/columns ``4·t ...``."""
    lines = [
        f"def input_transform_c{c}(x, v, n_img, hp, wp, th, tw):",
        "    for p in numba.prange(n_img * th * tw):",
        "        n, r = p // (th * tw), p % (th * tw)",
        "        ty, tx = r // tw, r % tw",
        f"        xb = np.uint64(((n * hp + 4 * ty) * wp + 4 * tx) * {c})",
        f"        vb = np.uint64(p * {36 * c})",
        f"        rs = np.uint64(wp * {c})",
    ]
    lines += [f"        r{i} = xb + {_u(i)} * rs" for i in range(6)]
    lines += [f"        for c in range({c}):", "            cu = np.uint64(c)"]
    lines += [f"            d{i}{j} = x[r{i} + {_u(j * c)} + cu]" for i in range(6) for j in range(6)]
    lines += [
        f"            t{i}{j} = {_sum(BT[i], [f'd{k}{j}' for k in range(6)])}" for i in range(6) for j in range(6)
    ]
    lines += [
        f"            v[vb + {_u((6 * i + j) * c)} + cu] = {_sum(BT[j], [f't{i}{k}' for k in range(6)])}"
        for i in range(6)
        for j in range(6)
    ]
    return "\n".join(lines)


def output_source(c: int, wo: int) -> str:
    """Source of ``output_transform_c{c}_w{wo}(m, bias, o, n_img, th, tw, hp, wp, ho, tile, apart)`` over flat
    float32 arrays: the 36 GEMMs' products m, value ``k`` of tile ``p`` (tiles ``(n_img, th, tw)`` in order) at
    ``p·tile + k·apart`` (``(n_img, th, tw, 36, c)``: ``tile = 36·c``, ``apart = c``, a grouped convolution's; ``(36,
    n_img·th·tw, c)``: ``tile = c``, ``apart = n_img·th·tw·c``, a batched matmul's) → ``A^T m A`` + bias per 4x4
    output tile, 2x2 max-pooled (a NaN wins, as ``torch.maximum``) and ReLU'd (a NaN kept), written into o ``(n_img,
    ho, wo, c)`` at ``1 + (pooled row, column)``: the next block's zero-bordered input. Pooled rows/columns from
    ``hp``/``wp`` on (the floor of an odd size, a tile's overhang) are left as they are. The two strides are runtime
    values (one kernel for both layouts, within 0.01 ms per call of constants measured on the reference model's
    blocks), the channel count is not."""
    body = ["cu = np.uint64(c)"]
    body += [f"m{i}{j} = m[mb + {_u(6 * i + j)} * ap + cu]" for i in range(6) for j in range(6)]
    body += [f"s{a}{j} = {_sum(AT[a], [f'm{i}{j}' for i in range(6)])}" for a in range(4) for j in range(6)]
    body += [f"y{a}{b} = {_sum(AT[b], [f's{a}{k}' for k in range(6)])}" for a in range(4) for b in range(4)]
    for u in range(2):
        for w in range(2):
            a, b, e, f = (f"y{2 * u + du}{2 * w + dw}" for du in range(2) for dw in range(2))
            body.append(f"q{u}{w} = mx(mx({a}, {b}), mx({e}, {f})) + bias[c]")
    store = [f"o[o{u}{w} + cu] = relu(q{u}{w})" for u in range(2) for w in range(2)]
    edge = [s for u in range(2) for w in range(2) for s in (f"if k{u} and l{w}:", f"    {store[2 * u + w]}")]
    lines = [
        f"def output_transform_c{c}_w{wo}(m, bias, o, n_img, th, tw, hp, wp, ho, tile, apart):",
        "    ap = np.uint64(apart)",
        "    for p in numba.prange(n_img * th * tw):",
        "        n, r = p // (th * tw), p % (th * tw)",
        "        ty, tx = r // tw, r % tw",
        "        mb = np.uint64(p) * np.uint64(tile)",
        "        k0, k1, l0, l1 = 2 * ty < hp, 2 * ty + 1 < hp, 2 * tx < wp, 2 * tx + 1 < wp",
        f"        o00 = np.uint64(((n * ho + 1 + 2 * ty) * {wo} + 1 + 2 * tx) * {c})",
        f"        o01 = o00 + {_u(c)}",
        f"        o10 = o00 + {_u(wo * c)}",
        f"        o11 = o10 + {_u(c)}",
        "        if k1 and l1:",
        f"            for c in range({c}):",
    ]
    lines += ["                " + s for s in body + store]
    lines += ["        else:", f"            for c in range({c}):"]
    lines += ["                " + s for s in body + edge]
    return "\n".join(lines)


def output_full_source(c: int) -> str:
    """Source of ``output_full_c{c}(m, bias, o, n_img, th, tw, h, w, tile, apart)``: the products m (laid out as
    for :func:`output_source`) → ``A^T m A`` + bias per 4x4 output tile, written into o ``(n_img, h, w, c)``, a dense
    channels-last convolution output (no pooling, no ReLU: a training step's convolution, and its input gradient).
    A tile's rows and columns from ``h`` / ``w`` on (its overhang) are not written. The row length is a runtime value
    (one kernel per channel count, not per frame size: a compile less for each; as fast as a constant, min of 60
    calls 0.061 vs 0.063, 0.050 vs 0.047, 0.167 vs 0.158 ms on the reference model's blocks 2-4, Zen 4)."""
    body = ["cu = np.uint64(c)"]
    body += [f"m{i}{j} = m[mb + {_u(6 * i + j)} * ap + cu]" for i in range(6) for j in range(6)]
    body += [f"s{a}{j} = {_sum(AT[a], [f'm{i}{j}' for i in range(6)])}" for a in range(4) for j in range(6)]
    body += [f"y{a}{b} = {_sum(AT[b], [f's{a}{k}' for k in range(6)])}" for a in range(4) for b in range(4)]
    body.append("bc = bias[c]")
    store = {(a, b): f"o[o{a} + {_u(b * c)} + cu] = y{a}{b} + bc" for a in range(4) for b in range(4)}
    edge = [s for (a, b), st in store.items() for s in (f"if {a} < rows and {b} < cols:", f"    {st}")]
    lines = [
        f"def output_full_c{c}(m, bias, o, n_img, th, tw, h, w, tile, apart):",
        "    ap = np.uint64(apart)",
        "    for p in numba.prange(n_img * th * tw):",
        "        n, r = p // (th * tw), p % (th * tw)",
        "        ty, tx = r // tw, r % tw",
        "        mb = np.uint64(p) * np.uint64(tile)",
        "        rows, cols = min(4, h - 4 * ty), min(4, w - 4 * tx)",
        f"        o0 = np.uint64(((n * h + 4 * ty) * w + 4 * tx) * {c})",
        f"        rs = np.uint64(w * {c})",
        "        o1 = o0 + rs",
        "        o2 = o1 + rs",
        "        o3 = o2 + rs",
        "        if rows == 4 and cols == 4:",
        f"            for c in range({c}):",
    ]
    lines += ["                " + s for s in body + list(store.values())]
    lines += ["        else:", f"            for c in range({c}):"]
    lines += ["                " + s for s in body + edge]
    return "\n".join(lines)


@numba.njit(inline="always")
def mx(a, b):  # torch.maximum: a NaN wins
    return a if (a >= b or a != a) else b


@numba.njit(inline="always")
def relu(q):  # torch.relu: a NaN stays
    return q if (q > 0 or q != q) else np.float32(0)


def _compile(source: str, name: str):
    """``source``'s function ``name``, compiled as if it were in this file, so numba's disk cache keeps it."""
    ns = {"__name__": __name__, "numba": numba, "np": np, "f32": np.float32, "mx": mx, "relu": relu}
    exec(compile(source, __file__, "exec"), ns)  # source generated above from the transform matrices
    return cached_njit(parallel=True, nogil=True)(ns[name])


@functools.cache
def input_transform(c: int):
    """The compiled input transform for ``c`` channels (:func:`input_source`)."""
    return _compile(input_source(c), f"input_transform_c{c}")


@functools.cache
def output_transform(c: int, wo: int):
    """The compiled output transform for ``c`` channels into rows of ``wo`` columns (:func:`output_source`)."""
    return _compile(output_source(c, wo), f"output_transform_c{c}_w{wo}")


@functools.cache
def output_full(c: int):
    """The compiled full-size output transform for ``c`` channels (:func:`output_full_source`)."""
    return _compile(output_full_source(c), f"output_full_c{c}")
