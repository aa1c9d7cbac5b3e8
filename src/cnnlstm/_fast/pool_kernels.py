"""BatchNorm's affine map, a 2x2 stride-2 max-pool and ReLU in one pass over channels-last frames, forward and
backward, compiled by numba: the passes PyTorch's CPU build runs one kernel at a time.

A training step of a conv - BatchNorm - ReLU - max-pool chain spends a third of its time outside the convolutions
(Zen 5, batch 8: 140 ms of 506), in passes over the convolutions' outputs: normalize, pool (with indices), ReLU
mask, max-pool backward, BatchNorm backward's sums and its closed form. Each reads or writes the full-size tensor.
Here forward reads each input value once and writes the pooled quarter; backward reads the input and the pooled
gradient twice (once for BatchNorm's two sums per channel, once to write the input gradient), recomputing the
window's maximum instead of storing indices.

Semantics are PyTorch's: ``torch.maximum``'s NaN propagation, ``max_pool2d_with_indices``' choice of the routed
value (the first maximum of a window in row-major order, the last NaN if any), ReLU's backward through
``threshold_backward`` (a NaN keeps its gradient), floor mode (an odd last row or column gets no gradient from the
pool). Sums per channel are taken per row in float32 and across rows in float64. BatchNorm's batch statistics
(:func:`batch_moments`) are one read of each value with float64 sums: 1.03-1.04x a whole-batch training step over
PyTorch's ``batch_norm_update_stats`` (the command's path; no change in chunks, whose parts PyTorch reads in
cache), and nearer the exact statistics.

Used by :mod:`.train_block` for float32 2x2 stride-2 pools when numba imports (the ``fast`` extra); everything
else, and every process without numba, runs PyTorch's kernels. :data:`ENABLED` switches them off.
"""

from __future__ import annotations

import functools
import os
import warnings

import numpy as np
import torch

from .threads import numba_owner, numba_threads

__all__ = ["ENABLED", "available", "batch_moments", "grad_input", "grad_sums", "norm_pool_relu"]

ENABLED = True  # False: PyTorch's kernels only (benchmarks compare the two)


@functools.cache
def _kernels():
    """The compiled kernels ``(forward, sums, grad_input)``, or None where numba is missing or fails to compile
    them (checked once on tiny arrays, with a warning)."""
    try:
        from . import _numba_pool
    except ImportError:
        return None
    try:
        kernels = (_numba_pool.forward, _numba_pool.sums, _numba_pool.grad_input, _numba_pool.moments)
        numba_owner()
        x = np.ones((1, 2, 2, 1), np.float32)
        g = np.ones((1, 1, 1, 1), np.float32)
        one = np.ones(1, np.float32)
        kernels[0](x, one, one, g.copy())
        kernels[1](x, g, one, one, one, np.empty((1, 2, 1), np.float32))
        kernels[2](x, g, one, one, one, one, one, x.copy())
        kernels[3](x, np.empty((2, 2, 1)))
    except Exception as err:  # an incompatible numba or LLVM: PyTorch's kernels then run, slower
        warnings.warn(f"cnnlstm: numba's pooling kernels failed to compile ({err}); using PyTorch's", stacklevel=2)
        return None
    return kernels


def available() -> bool:
    """True when the kernels run in this process (numba importable and compiling them, :data:`ENABLED`), and
    not in a child forked from the process that first ran them: GNU OpenMP, numba's thread pool here, kills
    such a child at its first parallel call ("fork() called from a process already using GNU OpenMP"), so a
    forked child runs PyTorch's kernels."""
    return ENABLED and _kernels() is not None and os.getpid() == numba_owner()


def _nhwc(t: torch.Tensor) -> np.ndarray:
    """A channels-last ``(B, C, H, W)`` float32 tensor as its ``(B, H, W, C)`` memory, no copy."""
    v = t.detach().permute(0, 2, 3, 1)
    if not v.is_contiguous():
        raise ValueError("pool_kernels take channels-last tensors")
    return v.numpy()


def _vec(t: torch.Tensor) -> np.ndarray:
    return t.detach().reshape(-1).to(torch.float32).contiguous().numpy()


def _call(which: int, *args) -> None:
    """Kernel ``which`` of :func:`_kernels` on ``args``, on PyTorch's thread count (:func:`.threads.numba_threads`)."""
    with numba_threads():
        _kernels()[which](*args)


def takes(x: torch.Tensor) -> bool:
    """True when the kernels run on ``x`` ``(B, C, H, W)``: float32 channels-last on the CPU, at least 2x2, and
    the kernels are :func:`available`."""
    return (
        x.dtype == torch.float32
        and x.device.type == "cpu"
        and x.dim() == 4
        and x.shape[-1] >= 2
        and x.shape[-2] >= 2
        and x.permute(0, 2, 3, 1).is_contiguous()
        and available()
    )


def norm_pool_relu(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``relu(max_pool2d(x·alpha + beta, 2))``: x ``(B, C, H, W)`` channels-last float32, alpha and beta ``C``
    values → ``(B, C, H // 2, W // 2)`` channels-last."""
    b, c, h, w = x.shape
    out = torch.empty((b, c, h // 2, w // 2), dtype=x.dtype, memory_format=torch.channels_last)
    if out.numel():
        _call(0, _nhwc(x), _vec(alpha), _vec(beta), _nhwc(out))
    return out


def batch_moments(parts) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel ``sum(x)`` and ``sum(x²)`` over all ``parts`` (channels-last ``(b, C, H, W)`` each), float64
    ``(C,)``, and the number of values per channel: one read of each value."""
    s1 = s2 = 0
    for x in parts:
        part = np.zeros((x.shape[0] * x.shape[2], 2, x.shape[1]), np.float64)
        if x.numel():
            _call(3, _nhwc(x), part)
        total = torch.from_numpy(part.sum(0))
        s1, s2 = s1 + total[0], s2 + total[1]
    return s1, s2, sum(p.numel() for p in parts) // parts[0].shape[1]


def grad_sums(x, grad, alpha, beta, mean) -> tuple[torch.Tensor, torch.Tensor]:
    """BatchNorm backward's two sums per channel for :func:`norm_pool_relu`'s output gradient ``grad``
    ``(B, C, H // 2, W // 2)``: ``sum(gz)`` and ``sum(gz · (x - mean))``, gz the gradient w.r.t. the normalized
    ``x``, each ``(C,)`` float64."""
    g = grad.contiguous(memory_format=torch.channels_last)
    rows = g.shape[0] * g.shape[2]
    part = np.zeros((rows, 2, g.shape[1]), np.float32)
    if rows and g.shape[3]:
        _call(1, _nhwc(x), _nhwc(g), _vec(alpha), _vec(beta), _vec(mean), part)
    total = torch.from_numpy(part.sum(0, dtype=np.float64))
    return total[0], total[1]


def grad_input(x, grad, alpha, beta, ka, kb, kc, out: torch.Tensor | None = None) -> torch.Tensor:
    """The input gradient ``ka·gz + kb·x + kc`` per channel (``C`` values each; gz routed back through ReLU and the
    pool as in :func:`grad_sums`): ``(B, C, H, W)`` channels-last, written into ``out`` (channels-last) if given."""
    g = grad.contiguous(memory_format=torch.channels_last)
    gx = torch.empty_like(x, memory_format=torch.channels_last) if out is None else out
    if gx.numel():
        _call(2, _nhwc(x), _nhwc(g), *map(_vec, (alpha, beta, ka, kb, kc)), _nhwc(gx))
    return gx
