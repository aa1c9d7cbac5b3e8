"""numba kernels of :mod:`.pool_kernels` (imported only where numba is installed): BatchNorm's affine map
``x·a + b`` per channel, a 2x2 stride-2 max-pool and ReLU over ``(B, H, W, C)`` float32 arrays, rows of pooled
output split across numba's threads. Compiled on first use and cached on disk, outside the package
(:func:`.threads.numba_cache_dir`; ~5 s once)."""

from __future__ import annotations

import numba
import numpy as np

from .threads import cached_njit

__all__ = ["forward", "grad_input", "moments", "sums"]

njit = cached_njit(parallel=True, nogil=True)
f32 = np.float32


@numba.njit(inline="always")
def mx(a, b):  # torch.maximum: a NaN wins
    return a if (a >= b or a != a) else b


@numba.njit(inline="always")
def routed(z0, z1, z2, z3, p):  # max_pool2d_with_indices' index in a window: first maximum, last NaN
    if p != p:
        return 3 if z3 != z3 else (2 if z2 != z2 else (1 if z1 != z1 else 0))
    return 0 if z0 == p else (1 if z1 == p else (2 if z2 == p else 3))


@njit
def forward(x, a, b, out):
    """``out[n, i, j, c] = relu(max over the 2x2 window of x·a[c] + b[c])``: x ``(B, H, W, C)``, out
    ``(B, H // 2, W // 2, C)``."""
    n_rows, hp, wp, c_n = out.shape[0] * out.shape[1], out.shape[1], out.shape[2], out.shape[3]
    for r in numba.prange(n_rows):
        n, i = r // hp, r % hp
        for j in range(wp):
            for c in range(c_n):
                z0 = x[n, 2 * i, 2 * j, c] * a[c] + b[c]
                z1 = x[n, 2 * i, 2 * j + 1, c] * a[c] + b[c]
                z2 = x[n, 2 * i + 1, 2 * j, c] * a[c] + b[c]
                z3 = x[n, 2 * i + 1, 2 * j + 1, c] * a[c] + b[c]
                p = mx(mx(z0, z1), mx(z2, z3))
                out[n, i, j, c] = p if (p > 0 or p != p) else f32(0)


# sums and grad_input spell out the same window recomputation on purpose: the same lines as one inlined helper
# returning a tuple made a training step 0.62x / 0.67x as fast (bench/pool_kernels.py, chunks / whole, batch 8)


@njit
def sums(x, g, a, b, mean, part):
    """Per pooled row ``r = n·H' + i``: ``part[r, 0] = sum(gz)``, ``part[r, 1] = sum(gz · (x - mean))`` per
    channel, gz the pooled gradient g ``(B, H', W', C)`` routed back through ReLU and the pool; part
    ``(B·H', 2, C)``."""
    hp, wp, c_n = g.shape[1], g.shape[2], g.shape[3]
    for r in numba.prange(g.shape[0] * hp):
        n, i = r // hp, r % hp
        s1 = np.zeros(c_n, f32)
        s2 = np.zeros(c_n, f32)
        for j in range(wp):
            for c in range(c_n):
                x0, x1 = x[n, 2 * i, 2 * j, c], x[n, 2 * i, 2 * j + 1, c]
                x2, x3 = x[n, 2 * i + 1, 2 * j, c], x[n, 2 * i + 1, 2 * j + 1, c]
                z0, z1, z2, z3 = x0 * a[c] + b[c], x1 * a[c] + b[c], x2 * a[c] + b[c], x3 * a[c] + b[c]
                p = mx(mx(z0, z1), mx(z2, z3))
                v = g[n, i, j, c] if not p <= 0 else f32(0)
                k = routed(z0, z1, z2, z3, p)
                xk = x0 if k == 0 else (x1 if k == 1 else (x2 if k == 2 else x3))
                s1[c] += v
                s2[c] += v * (xk - mean[c])
        for c in range(c_n):
            part[r, 0, c] = s1[c]
            part[r, 1, c] = s2[c]


@njit
def grad_input(x, g, a, b, ka, kb, kc, gx):
    """``gx = ka·gz + kb·x + kc`` per channel (gz as in :func:`sums`), gx shaped as x ``(B, H, W, C)``."""
    hp, wp, c_n = g.shape[1], g.shape[2], g.shape[3]
    h, w = x.shape[1], x.shape[2]
    for r in numba.prange(g.shape[0] * hp):
        n, i = r // hp, r % hp
        for j in range(wp):
            for c in range(c_n):
                x0, x1 = x[n, 2 * i, 2 * j, c], x[n, 2 * i, 2 * j + 1, c]
                x2, x3 = x[n, 2 * i + 1, 2 * j, c], x[n, 2 * i + 1, 2 * j + 1, c]
                z0, z1, z2, z3 = x0 * a[c] + b[c], x1 * a[c] + b[c], x2 * a[c] + b[c], x3 * a[c] + b[c]
                p = mx(mx(z0, z1), mx(z2, z3))
                v = g[n, i, j, c] * ka[c] if not p <= 0 else f32(0)
                k = routed(z0, z1, z2, z3, p)
                gx[n, 2 * i, 2 * j, c] = (v if k == 0 else f32(0)) + kb[c] * x0 + kc[c]
                gx[n, 2 * i, 2 * j + 1, c] = (v if k == 1 else f32(0)) + kb[c] * x1 + kc[c]
                gx[n, 2 * i + 1, 2 * j, c] = (v if k == 2 else f32(0)) + kb[c] * x2 + kc[c]
                gx[n, 2 * i + 1, 2 * j + 1, c] = (v if k == 3 else f32(0)) + kb[c] * x3 + kc[c]
        if w > 2 * wp:  # floor mode's dropped last column: no gradient from the pool
            for c in range(c_n):
                for y in (2 * i, 2 * i + 1):
                    gx[n, y, w - 1, c] = kb[c] * x[n, y, w - 1, c] + kc[c]
        if h > 2 * hp and i == hp - 1:  # and the dropped last row
            for xx in range(w):
                for c in range(c_n):
                    gx[n, h - 1, xx, c] = kb[c] * x[n, h - 1, xx, c] + kc[c]


@njit
def moments(x, part):
    """Per row ``r = n·H + h`` of x ``(B, H, W, C)``: ``part[r, 0] = sum(x)``, ``part[r, 1] = sum(x²)`` over the
    row's W values of each channel, in float64; part ``(B·H, 2, C)`` float64."""
    h_n, w_n, c_n = x.shape[1], x.shape[2], x.shape[3]
    for r in numba.prange(x.shape[0] * h_n):
        n, h = r // h_n, r % h_n
        s1 = np.zeros(c_n, np.float64)
        s2 = np.zeros(c_n, np.float64)
        for w in range(w_n):
            for c in range(c_n):
                v = np.float64(x[n, h, w, c])
                s1[c] += v
                s2[c] += v * v
        for c in range(c_n):
            part[r, 0, c] = s1[c]
            part[r, 1, c] = s2[c]
