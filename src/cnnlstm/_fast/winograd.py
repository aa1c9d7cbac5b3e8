"""Winograd F(4x4, 3x3) convolutions for float32 inference: conv3x3 - max-pool 2x2 - ReLU blocks with 4x fewer
multiplications than oneDNN's direct convolution.

Each 6x6 input tile ``d`` becomes ``B^T d B`` (36 values per channel, numba); the 36 products with the
transformed weights ``G g G^T`` are 36 GEMMs, run either as one grouped 1x1 oneDNN convolution over channels-last
tiles or as MKL's batched sgemm behind ``torch.bmm``, whichever a block's first step timed faster on this machine
(:data:`GEMM`); numba's output transform ``A^T m A`` adds the bias and pools and ReLUs each 4x4 output tile, writing
the next block's zero-bordered channels-last input. Blocks 2-4 of the reference model on chunks of 4 frames ran
1.21-1.54x as fast as oneDNN's direct convolution, max-pool and ReLU on blocked tensors (Zen 5, 2 threads,
``bench/winograd_probe.py``). The results differ from the direct convolution's by float32 rounding in another
order: within 6.3e-6 of the float64 result where the direct one is within 1.2e-6 (outputs up to 2.7); the two ways
of running the products differ from each other by the same kind of rounding.

Used by :class:`.onednn.OneDNNPrefix` for blocks whose convolution is 3x3, stride 1, padding 1, ungrouped, with at
least :data:`MIN_CHANNELS` input channels (the first block's 3 make a GEMM too thin to gain), when numba imports
(the ``fast`` extra). :data:`ENABLED` switches it off. Training steps run the convolution alone at full size
(:meth:`WinogradBlock.full`) for the forward and the input gradient: :mod:`.winograd_train`.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from collections.abc import Callable, Mapping

import torch
from torch import nn

from .threads import numba_owner, numba_threads

__all__ = ["ENABLED", "GEMM", "MIN_CHANNELS", "WinogradBlock", "available", "eligible"]

ENABLED = True  # False: oneDNN's direct convolutions only
# Frames per call of a block's kernels: its transformed tiles and products (36 values per tile and channel, in and
# out) about STEP_BYTES (None: the whole chunk). The products are memory-bound; with 6 MB the reference model's
# block 2 runs 2 frames a call (10.8 MB at 4), blocks 3-4 whole 4-frame chunks. Whole inference calls, alternated in
# one process against the whole chunk (Zen 4, 9 processes, batch 8 and 32): 0.98-1.15x, mean 1.05x; 3 MB was worse.
STEP_BYTES: int | None = 6 << 20
# How a block runs its 36 products: "conv" (a grouped 1x1 oneDNN convolution over the tiles, channels-last) or "bmm"
# (MKL's batched sgemm behind torch.bmm, the products laid out (36, tiles, Co)), both read by one output kernel;
# "auto" times both on a block's first step of each shape and keeps the faster. Which wins depends on the
# processor: on Zen 5 oneDNN's convolutions ran 340-470 GFLOP/s and sgemm 180-200; on Zen 4 bmm took 0.68-0.77x
# conv's time for the reference model's block 4, 0.77-0.94x for block 3, and 1.13-1.21x for block 2 (whole blocks,
# 4 frames, alternated in one process). The environment's CNNLSTM_WINOGRAD_GEMM sets it for a process and its
# children: "conv" or "bmm" skips the timing and runs the same way on every machine.
GEMMS = ("conv", "bmm")


def gemm_setting(environ: Mapping[str, str] = os.environ) -> str:
    """:data:`GEMM`'s value from ``CNNLSTM_WINOGRAD_GEMM`` in ``environ`` ("auto" without it); a ValueError names
    any other value."""
    value = environ.get("CNNLSTM_WINOGRAD_GEMM", "auto")
    if value not in ("auto", *GEMMS):
        raise ValueError(f"CNNLSTM_WINOGRAD_GEMM={value!r}: use one of auto, conv, bmm")
    return value


GEMM = gemm_setting()
TRIALS = 5  # timed runs of each way when "auto" chooses (a step takes about a millisecond)
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
    """``relu(max_pool2d(conv3x3(x, weight, bias, padding=1), 2))`` by Winograd F(4x4, 3x3) (a call), or the
    convolution alone at full size (:meth:`full`).

    Args:
        weight: the convolution's ``(Co, Ci, 3, 3)``; bias ``(Co,)`` or None. Both read once, here.
        chosen: where the block keeps the GEMM way it chose for each step shape (a training step's blocks, made
            afresh from each step's weights, share one); a dict of its own by default.
        exact: transform the weights in float64 (inference, once); False: in float32 (training, every step).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, chosen: dict | None = None, exact=True):
        co, ci = weight.shape[:2]
        g = torch.tensor([[float(v) for v in row] for row in _module().G], dtype=torch.float64)  # (6, 3)
        gg, w = torch.kron(g, g), weight.detach().reshape(co * ci, 9)  # (36, 9): (G ⊗ G) vec(w) = vec(G w G^T)
        gg, w = (gg, w.double()) if exact else (gg.float(), w.float())
        self.u = (gg @ w.T).float().view(6, 6, co, ci)  # (6, 6, Co, Ci): G w G^T, one GEMM
        self.chosen: dict[tuple, str] = {} if chosen is None else chosen  # step shape -> "conv" or "bmm"
        self.bias = torch.zeros(co) if bias is None else bias.detach().float().contiguous()
        self.ci, self.co = ci, co

    @functools.cached_property
    def weight(self) -> torch.Tensor:
        """The 36 GEMMs' matrices as one grouped 1x1 convolution's weight ``(36·Co, Ci, 1, 1)`` (a view)."""
        return self.u.view(36 * self.co, self.ci, 1, 1)

    @functools.cached_property
    def matrices(self) -> torch.Tensor:
        """The 36 GEMMs' matrices ``(36, Ci, Co)`` for torch.bmm: a copy (as a transposed view, block 4's bmm took a
        median 1.40 against 1.20 ms, Zen 4)."""
        return self.u.view(36, self.co, self.ci).transpose(1, 2).contiguous()

    def _frames(self, b: int, th: int, tw: int) -> int:
        frame_bytes = th * tw * 36 * (self.ci + self.co) * 4  # one frame's float32 transformed tiles and products
        return b if STEP_BYTES is None else max(1, min(b, STEP_BYTES // frame_bytes))

    def __call__(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Args: x ``(B, 4·tiles(h) + 2, 4·tiles(w) + 2, Ci)`` (:func:`padded`, or the previous block's output) for
        frames of ``h`` x ``w``. Returns the next block's input for frames of ``h // 2`` x ``w // 2``."""
        b, th, tw = x.shape[0], tiles(h), tiles(w)
        ho, wo = 4 * tiles(h // 2) + 2, 4 * tiles(w // 2) + 2
        out = torch.zeros(b, ho, wo, self.co)
        step = self._frames(b, th, tw)
        shape = (step, th, tw, h, w)
        back = _module().output_transform(self.co, wo)

        def finish(m: torch.Tensor, o: torch.Tensor, n: int, tile: int, apart: int) -> None:
            back(m.view(-1).numpy(), self.bias.numpy(), o.view(-1).numpy(), n, th, tw, h // 2, w // 2, ho, tile, apart)

        self._steps([(x[s : s + step], out[s : s + step]) for s in range(0, b, step)], shape, finish)
        return out

    def full(self, x: torch.Tensor) -> torch.Tensor:
        """``conv2d(x, weight, bias, padding=1)`` at full size, channels-last: x ``(B, H, W, Ci)`` → ``(B, H, W,
        Co)``. Each step's frames are copied into a zero-bordered buffer of the step's size first (in cache)."""
        b, h, w = x.shape[:3]
        th, tw = tiles(h), tiles(w)
        out = torch.empty(b, h, w, self.co)
        step = self._frames(b, th, tw)
        shape = ("full", step, th, tw, h, w)
        buf = torch.zeros(min(step, b), 4 * th + 2, 4 * tw + 2, self.ci)  # its border and overhang stay zero
        back = _module().output_full(self.co)

        def finish(m: torch.Tensor, o: torch.Tensor, n: int, tile: int, apart: int) -> None:
            back(m.view(-1).numpy(), self.bias.numpy(), o.view(-1).numpy(), n, th, tw, h, w, tile, apart)

        def parts():
            for s in range(0, b, step):
                n = min(step, b - s)
                buf[:n, 1 : h + 1, 1 : w + 1].copy_(x[s : s + n])
                yield buf[:n], out[s : s + n]

        self._steps(parts(), shape, finish)
        return out

    def _steps(self, parts, shape: tuple, finish: Callable) -> None:
        """Each ``(input, output)`` of ``parts`` as a step, its products by the way chosen for ``shape``."""
        gemm = GEMM if GEMM != "auto" else self.chosen.get(shape)
        for part in parts:
            if gemm is None:
                gemm = self.chosen[shape] = self._choose(part, shape, finish)
            self._step(*part, gemm, shape, finish)

    def _step(self, x: torch.Tensor, out: torch.Tensor, gemm: str, shape: tuple, finish: Callable) -> None:
        """One step of up to ``step`` frames of ``shape`` (``(..., step, th, tw, h, w)``): x's tiles transformed,
        multiplied (``gemm``), transformed back into ``out`` (``finish``)."""
        th, tw, n = shape[-4], shape[-3], x.shape[0]
        v = torch.empty(n, th, tw, 36 * self.ci)
        _module().input_transform(self.ci)(x.view(-1).numpy(), v.view(-1).numpy(), n, x.shape[1], x.shape[2], th, tw)
        m = self._products(v, gemm)
        tile, apart = (self.co, n * th * tw * self.co) if gemm == "bmm" else (36 * self.co, self.co)
        finish(m, out, n, tile, apart)

    def _products(self, v: torch.Tensor, gemm: str) -> torch.Tensor:
        """The 36 GEMMs on transformed tiles v ``(n, th, tw, 36·Ci)``: ``(36, n·th·tw, Co)`` by ``torch.bmm``, else
        ``(n, th, tw, 36·Co)`` by a grouped 1x1 convolution."""
        if gemm == "bmm":
            return torch.bmm(v.view(-1, 36, self.ci).transpose(0, 1), self.matrices)
        m = torch.conv2d(v.permute(0, 3, 1, 2), self.weight, groups=36)  # (n, 36·Co, th, tw) channels-last
        return m.permute(0, 2, 3, 1).contiguous()

    def _choose(self, part: tuple[torch.Tensor, torch.Tensor], shape: tuple, finish: Callable) -> str:
        """The faster way to run the products for steps of ``shape`` on this machine, timed on a first step ``part``
        (each way's best of :data:`TRIALS`, alternated): the GEMMs alone first, then, where ``torch.bmm``'s were
        faster, whole steps (its products' layout costs the output transform more)."""
        step, th, tw = shape[-5:-2]
        v = torch.zeros(step, th, tw, 36 * self.ci)
        if _best({g: (lambda g=g: self._products(v, g)) for g in GEMMS}) == "conv":
            return "conv"
        return _best({g: (lambda g=g: self._step(*part, g, shape, finish)) for g in GEMMS})


def _best(ways: dict[str, Callable[[], object]]) -> str:
    """The key of the fastest of ``ways``: each run once untimed, then :data:`TRIALS` alternated timed runs, the
    best of each kept."""
    for f in ways.values():
        f()
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(TRIALS):
        for key, f in ways.items():
            t = time.perf_counter()
            f()
            best[key] = min(best[key], time.perf_counter() - t)
    return min(best, key=best.get)


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
