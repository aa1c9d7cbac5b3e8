"""Winograd F(4x4, 3x3) convolutions for float32 inference: conv3x3 - max-pool 2x2 - ReLU blocks with 4x fewer
multiplications than oneDNN's direct convolution.

Each 6x6 input tile ``d`` becomes ``B^T d B`` (36 values per channel, numba); the 36 products with the
transformed weights ``G g G^T`` are 36 GEMMs, run as one grouped 1x1 oneDNN convolution over channels-last tiles
(MKL's sgemm, behind ``torch.bmm``, ran at 180-200 GFLOP/s on the AMD processor here, oneDNN's convolutions at
340-470); numba's output transform ``A^T m A`` adds the bias and pools and ReLUs each 4x4 output tile, writing the
next block's zero-bordered channels-last input. Blocks 2-4 of the reference model on chunks of 4 frames ran
1.21-1.54x as fast as oneDNN's direct convolution, max-pool and ReLU on blocked tensors (Zen 5, 2 threads,
``bench/winograd_probe.py``). The results differ from the direct convolution's by float32 rounding in another
order: within 6.3e-6 of the float64 result where the direct one is within 1.2e-6 (outputs up to 2.7).

Used by :class:`.onednn.OneDNNPrefix` for blocks whose convolution is 3x3, stride 1, padding 1, ungrouped, with at
least :data:`MIN_CHANNELS` input channels (the first block's 3 make a GEMM too thin to gain), when numba imports
(the ``fast`` extra). :data:`ENABLED` switches it off.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch
from torch import nn

from .threads import numba_owner, numba_threads

__all__ = ["ENABLED", "MIN_CHANNELS", "WinogradBlock", "available", "eligible"]

ENABLED = True  # False: oneDNN's direct convolutions only
# Frames per call of a block's kernels: its transformed tiles and products (36 values per tile and channel, in and
# out) about STEP_BYTES (None: the whole chunk). The products are memory-bound; with 6 MB the reference model's
# block 2 runs 2 frames a call (10.8 MB at 4), blocks 3-4 whole 4-frame chunks. Whole inference calls, alternated in
# one process against the whole chunk (Zen 4, 9 processes, batch 8 and 32): 0.98-1.15x, mean 1.05x; 3 MB was worse.
STEP_BYTES: int | None = 6 << 20
MIN_CHANNELS = 32  # input channels from which a block runs here: measured from 32 (32->64 at 56x56) up


_failed: list[str] = []  # why the kernels stopped running in this process, if they did


@functools.cache
def _module():
    """:mod:`._numba_winograd`, or None where numba is missing."""
    try:
        from . import _numba_winograd
    except ImportError:
        return None
    numba_owner()
    return _numba_winograd


def available() -> bool:
    """True when the kernels run in this process: numba importable, :data:`ENABLED`, not a child forked from the
    process that first readied numba's kernels (:func:`.threads.numba_owner`), and no kernel failed to compile here
    (:func:`failed`)."""
    return ENABLED and not _failed and _module() is not None and os.getpid() == numba_owner()


def failed(err: Exception) -> None:
    """Stops the kernels in this process after ``err`` (an incompatible numba or LLVM), with a warning: oneDNN's
    direct convolutions run instead, slower."""
    _failed.append(str(err))
    warnings.warn(f"cnnlstm: numba's Winograd kernels failed ({err}); using oneDNN's convolutions", stacklevel=3)


def eligible(conv: nn.Conv2d, pool: tuple) -> bool:
    """True for a float32 conv 3x3, stride 1, padding 1, no dilation, ungrouped, with at least
    :data:`MIN_CHANNELS` input channels, followed by a max-pool of 2x2, stride 2, no padding, floor mode
    (``pool``: :class:`.onednn.OneDNNPrefix`'s arguments ``(kernel, stride, padding, dilation, ceil_mode)``)."""
    two = lambda v: v in (2, (2, 2), [2, 2])  # noqa: E731  (nn.MaxPool2d keeps ints, tuples or lists as given)
    kernel, stride, padding, _, ceil = pool  # stride: nn.MaxPool2d's, the kernel size when none was given
    return (
        tuple(conv.kernel_size) == (3, 3)
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.padding) == (1, 1)
        and tuple(conv.dilation) == (1, 1)
        and conv.groups == 1
        and conv.in_channels >= MIN_CHANNELS
        and conv.weight.dtype == torch.float32
        and two(kernel)
        and two(stride)
        and padding in (0, (0, 0), [0, 0])
        and not ceil
    )


def tiles(n: int) -> int:
    """4x4 output tiles across ``n`` rows (or columns)."""
    return (n + 3) // 4


def padded(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, 4·tiles(H) + 2, 4·tiles(W) + 2, C)`` channels-last with a zero border: a block's
    input."""
    b, c, h, w = x.shape
    out = torch.zeros(b, 4 * tiles(h) + 2, 4 * tiles(w) + 2, c)
    out[:, 1 : h + 1, 1 : w + 1].copy_(x.permute(0, 2, 3, 1))
    return out


class WinogradBlock:
    """``relu(max_pool2d(conv3x3(x, weight, bias, padding=1), 2))`` by Winograd F(4x4, 3x3).

    Args:
        weight: the convolution's ``(Co, Ci, 3, 3)``; bias ``(Co,)`` or None. Both read once, here.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        co, ci = weight.shape[:2]
        g = torch.tensor([[float(v) for v in row] for row in _module().G], dtype=torch.float64)  # (6, 3)
        u = torch.einsum("ik,ockl,jl->ijoc", g, weight.detach().double(), g)  # (6, 6, Co, Ci): G w G^T
        self.weight = u.reshape(36 * co, ci, 1, 1).float().contiguous()  # the 36 GEMMs' as one grouped 1x1 conv
        self.bias = torch.zeros(co) if bias is None else bias.detach().float().contiguous()
        self.ci, self.co = ci, co

    def __call__(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Args: x ``(B, 4·tiles(h) + 2, 4·tiles(w) + 2, Ci)`` (:func:`padded`, or the previous block's output) for
        frames of ``h`` x ``w``. Returns the next block's input for frames of ``h // 2`` x ``w // 2``."""
        kernels = _module()
        b, th, tw = x.shape[0], tiles(h), tiles(w)
        ho, wo = 4 * tiles(h // 2) + 2, 4 * tiles(w // 2) + 2
        out = torch.zeros(b, ho, wo, self.co)
        into, back = kernels.input_transform(self.ci), kernels.output_transform(self.co, wo)
        frame_bytes = th * tw * 36 * (self.ci + self.co) * 4  # one frame's float32 transformed tiles and products
        step = b if STEP_BYTES is None else max(1, STEP_BYTES // frame_bytes)
        for s in range(0, b, step):  # frames per call: the transformed tiles and products about STEP_BYTES
            n = min(step, b - s)
            v = torch.empty(n, th, tw, 36 * self.ci)
            into(x[s : s + n].view(-1).numpy(), v.view(-1).numpy(), n, x.shape[1], x.shape[2], th, tw)
            m = torch.conv2d(v.permute(0, 3, 1, 2), self.weight, groups=36)  # (n, 36·Co, th, tw) channels-last
            m = m.permute(0, 2, 3, 1).contiguous()
            back(m.view(-1).numpy(), self.bias.numpy(), out[s : s + n].view(-1).numpy(), n, th, tw, h // 2, w // 2, ho)
        return out


def run(blocks: list[WinogradBlock], x: torch.Tensor) -> torch.Tensor:
    """``blocks`` in a row on ``x`` ``(B, C, H, W)`` float32 → ``(B, Co, H', W')`` (a channels-last view), on
    PyTorch's thread count (:func:`.threads.numba_threads`)."""
    h, w = x.shape[-2:]
    y = padded(x)
    with numba_threads():
        for block in blocks:
            y = block(y, h, w)
            h, w = h // 2, w // 2
    return y[:, 1 : h + 1, 1 : w + 1].permute(0, 3, 1, 2)
