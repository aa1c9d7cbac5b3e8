"""BatchNorm - ReLU - max-pool as one autograd step for training, keeping less for backward than the three modules.

The plain chain keeps BatchNorm's full-size output alive until backward (ReLU and max-pool save it), max-pool's
int64 indices, and runs ReLU and its backward at full size. ReLU commutes with max-pooling, so here it runs on the
pooled quarter of the values, and each function keeps only what its backward reads: :class:`BatchNormPoolReLU`
(bfloat16) frees BatchNorm's output as soon as it is pooled; :class:`ChunkedBatchNormPoolReLU` (float32) keeps
neither that output nor the indices and recomputes them chunk by chunk. :class:`FusedChain` runs a chain of modules
with each BatchNorm2d - ReLU - MaxPool2d run through one of them. Outputs and gradients equal the plain chain's
(to float32 rounding: some sums run in another order). In float32, a 2x2 stride-2 pool's normalize - pool - ReLU
and its backward run as :mod:`.pool_kernels` (numba, one pass forward, two backward) where numba is installed.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from . import pool_kernels, winograd_train
from .switch import once_differentiable

__all__ = ["CHUNK_BYTES", "BatchNormPoolReLU", "ChunkedBatchNormPoolReLU", "FusedChain", "bn_pool_relu"]

CHUNK_BYTES = 4 << 20  # frames per chunk of ChunkedBatchNormPoolReLU: about this much of its input (in cache)


class BatchNormPoolReLU(torch.autograd.Function):
    """BatchNorm, then max-pool, then ReLU (bfloat16), keeping BatchNorm's input, the indices and ReLU's 1-byte mask.

    Max-pool's backward reads only the indices and the input's shape, which BatchNorm's input (kept for
    BatchNorm's backward anyway) has, so BatchNorm's output is freed once pooled. The kernels are PyTorch's own
    (``native_batch_norm``, max-pool with indices, and their backwards), so gradients equal the plain chain's;
    the output itself is not saved, so in-place ops on it stay legal.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps, pool):
        y, mean, invstd = torch.native_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps)
        p, idx = torch.ops.aten.max_pool2d_with_indices(y, *pool)
        del y
        p.relu_()
        keep = p > 0  # ReLU's mask, not the output itself
        ctx.save_for_backward(x, weight, running_mean, running_var, mean, invstd, idx, keep)
        ctx.training, ctx.eps, ctx.pool = training, eps, pool
        return p  # (B, C, H', W')

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight, running_mean, running_var, mean, invstd, idx, keep = ctx.saved_tensors
        grad = torch.where(keep, grad, 0)
        grad = torch.ops.aten.max_pool2d_with_indices_backward(grad, x, *ctx.pool, idx)  # x: shape and layout only
        mask = [True, ctx.needs_input_grad[1], ctx.needs_input_grad[2]]  # a frozen weight, a trained bias: fine
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            grad, x, weight, running_mean, running_var, mean, invstd, ctx.training, ctx.eps, mask
        )
        return gx, gw, gb, None, None, None, None, None, None


class ChunkedBatchNormPoolReLU(torch.autograd.Function):
    """:class:`BatchNormPoolReLU` for float32, keeping only BatchNorm's input and per-channel statistics.

    Forward takes the batch statistics in one pass, then normalizes and pools ``CHUNK_BYTES`` of input at a
    time (in cache), so no full-size normalized tensor exists. Backward (:func:`norm_backward`) recomputes each
    chunk's normalized values, pooled values and indices, routes the gradient through ReLU and max-pool chunk by
    chunk, and finishes BatchNorm's backward in closed form, in place.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps, pool):
        stats = norm_stats([x], weight, bias, running_mean, running_var, training, momentum, eps)
        step = max(1, x.shape[0]) if _kernel_pool([x], pool, True) else _chunk(x)  # a kernel's one pass: no chunks
        parts = norm_forward(x.split(step), stats, pool, relu=True)
        # not saved: backward recomputes the pooled values, so in-place ops on the output stay legal
        ctx.save_for_backward(x, *stats)
        ctx.training, ctx.pool, ctx.step = training, pool, step
        return parts[0] if len(parts) == 1 else torch.cat(parts)  # (B, C, H', W')

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, *stats = ctx.saved_tensors
        gx = torch.empty_like(x)  # first the gradient w.r.t. BatchNorm's output, then, in place, w.r.t. x
        parts = [t.split(ctx.step) for t in (x, grad, gx)]
        gw, gb = norm_backward(*parts, stats, ctx.training, ctx.pool, relu=True)
        return gx, *_needed(ctx, 1, gw, gb), None, None, None, None, None, None


class PartsBatchNorm(torch.autograd.Function):
    """BatchNorm2d, then max-pool (or not), then ReLU (or not), over a batch given as a list of chunks: the
    statistics are the whole batch's, and no tensor larger than a chunk is made in forward or backward.

    ``apply(weight, bias, running_mean, running_var, training, momentum, eps, pool, relu, *parts)`` → one
    output per part, ``(b, C, H', W')``. Keeps the parts and per-channel statistics; backward recomputes each
    chunk's normalized values and indices (:func:`norm_backward`).
    """

    @staticmethod
    def forward(ctx, weight, bias, running_mean, running_var, training, momentum, eps, pool, relu, *parts):
        stats = norm_stats(parts, weight, bias, running_mean, running_var, training, momentum, eps)
        ctx.save_for_backward(*stats, *parts)
        ctx.training, ctx.pool, ctx.relu = training, pool, relu
        return tuple(norm_forward(parts, stats, pool, relu))

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        mean, invstd, alpha, beta, *parts = ctx.saved_tensors
        # an output without a gradient gets zeros from autograd itself (a Function's grads are materialized)
        gxs = [torch.empty_like(p) for p in parts]
        gw, gb = norm_backward(parts, grads, gxs, (mean, invstd, alpha, beta), ctx.training, ctx.pool, ctx.relu)
        return *_needed(ctx, 0, gw, gb), None, None, None, None, None, None, None, *gxs


def _needed(ctx, first: int, gw: torch.Tensor, gb: torch.Tensor) -> tuple:
    """The weight's and bias's gradients where autograd asks for them (inputs ``first`` and ``first + 1``)."""
    return (gw if ctx.needs_input_grad[first] else None, gb if ctx.needs_input_grad[first + 1] else None)


def norm_stats(parts, weight, bias, running_mean, running_var, training: bool, momentum: float, eps: float):
    """BatchNorm's statistics over all ``parts`` (chunks of one batch, ``(b, C, H, W)`` each) and its affine map
    as ``x·alpha + beta``: ``(mean, invstd, alpha, beta)``, ``(C,)`` and ``(1, C, 1, 1)``. In training the
    running statistics (if any) move as BatchNorm moves them, by the whole batch's mean and unbiased variance;
    otherwise the running ones are used."""
    if training:
        mean, var = _batch_stats(parts, running_mean, running_var, momentum)
        invstd = (var + eps).rsqrt()
    else:
        mean, invstd = running_mean, (running_var + eps).rsqrt()
    alpha = invstd if weight is None else invstd * weight
    beta = -mean * alpha if bias is None else bias - mean * alpha
    return mean, invstd, alpha.view(1, -1, 1, 1), beta.view(1, -1, 1, 1)


def _batch_stats(parts, running_mean, running_var, momentum: float):
    """Mean and biased variance per channel over all ``parts``, the running statistics (if any) updated."""
    if all(pool_kernels.takes(p) for p in parts):  # numba: one read of each value, float64 sums
        s1, s2, n = pool_kernels.batch_moments(parts)
        mean = s1 / n
        var = (s2 / n - mean.square()).clamp_min(0)
        mean, var = mean.to(parts[0].dtype), var.to(parts[0].dtype)
        _move_running(running_mean, running_var, mean, var, momentum, n)
        return mean, var
    if len(parts) == 1:
        return torch.batch_norm_update_stats(parts[0], running_mean, running_var, momentum)
    stats = [torch.batch_norm_update_stats(p, None, None, 0.0) for p in parts]  # per chunk, then merged
    counts = [p.numel() // p.shape[1] for p in parts]
    n = sum(counts)
    mean = sum(m * (k / n) for (m, _), k in zip(stats, counts, strict=True))
    var = sum((v + (m - mean).square()) * (k / n) for (m, v), k in zip(stats, counts, strict=True))
    _move_running(running_mean, running_var, mean, var, momentum, n)
    return mean, var


def _move_running(running_mean, running_var, mean, var, momentum: float, n: int) -> None:
    """The running statistics (if any) moved by a batch of ``n`` values per channel, as batch_norm_update_stats
    moves them: by the mean and the unbiased variance."""
    if running_mean is not None:
        running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        running_var.mul_(1 - momentum).add_(var, alpha=momentum * n / max(n - 1, 1))


def norm_forward(parts, stats, pool: tuple | None, relu: bool) -> list[torch.Tensor]:
    """Each part ``(b, C, H, W)`` normalized (``stats`` from :func:`norm_stats`), max-pooled (``pool``:
    max-pool's arguments, or None) and, if ``relu``, through ReLU: ``(b, C, H', W')`` each."""
    if _kernel_pool(parts, pool, relu):
        return [pool_kernels.norm_pool_relu(p, stats[2], stats[3]) for p in parts]
    outs = [_norm_pool_part(p, stats[2], stats[3], pool) for p in parts]
    for o in outs if relu else ():
        o.relu_()
    return outs


def _kernel_pool(parts, pool: tuple | None, relu: bool) -> bool:
    """True when :mod:`.pool_kernels` run BatchNorm - 2x2 max-pool - ReLU on ``parts`` (float32 channels-last,
    numba present), in one pass forward and two backward."""
    return relu and pool is not None and tuple(pool) == HALVING and all(pool_kernels.takes(p) for p in parts)


def _norm_pool_part(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, pool: tuple | None) -> torch.Tensor:
    """A part ``(b, C, H, W)`` normalized and max-pooled (as :func:`_norm_pool`, without indices), made
    ``CHUNK_BYTES`` of it at a time (in cache) into one channels-last tensor ``(b, C, H', W')``."""
    step = _chunk(x)
    shape = (x.shape[0], *_pooled(tuple(x.shape[1:]), pool))
    out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    for s in range(0, x.shape[0], step):
        if pool is None:
            torch.addcmul(beta, x[s : s + step], alpha, out=out[s : s + step])
        else:  # the normalized chunk in cache, pooled straight into the part's output
            _max_pool(torch.addcmul(beta, x[s : s + step], alpha), pool, out[s : s + step])
    return out


@functools.lru_cache(maxsize=256)
def _pooled(frame: tuple, pool: tuple | None) -> tuple:
    """A frame's shape ``(C, H, W)`` after ``pool`` (max-pool's arguments; None: unchanged) ``(C, H', W')``, from
    a dry run on ``meta`` once per shape (a dry run per call cost ~55 us, a part of every training step)."""
    if pool is None:
        return frame
    return tuple(torch.ops.aten.max_pool2d_with_indices(torch.empty(1, *frame, device="meta"), *pool)[0].shape[1:])


HALVING = ((2, 2), (2, 2), (0, 0), (1, 1), False)  # pool_args of nn.MaxPool2d(2)


def _max_pool(z: torch.Tensor, pool: tuple, out: torch.Tensor) -> None:
    """Max-pool's values alone (forward keeps no indices) into ``out``: a 2x2 stride-2 pool as the maximum of
    four strided views of ``z`` (1.7-1.9x faster than ``max_pool2d_with_indices`` on an in-cache chunk of
    2x32x112x112; the same values, NaN included), any other pool by PyTorch's kernel."""
    if tuple(pool) != HALVING:
        torch.ops.aten.max_pool2d_with_indices.out(z, *pool, out=out, indices=torch.empty(0, dtype=torch.long))
        return
    h, w = z.shape[-2] // 2 * 2, z.shape[-1] // 2 * 2  # floor mode: an odd last row or column is dropped
    top = torch.maximum(z[..., 0:h:2, 0:w:2], z[..., 0:h:2, 1:w:2])
    torch.maximum(z[..., 1:h:2, 0:w:2], z[..., 1:h:2, 1:w:2], out=out)
    torch.maximum(top, out, out=out)


def norm_backward(parts, grads, gxs, stats, training: bool, pool: tuple | None, relu: bool):
    """The backward of :func:`norm_forward` chunk by chunk: writes each part's input gradient into its ``gxs``
    buffer (the part's shape) and returns the weight's and bias's gradients, ``(C,)`` each.

    Each chunk's normalized and pooled values and indices are recomputed (forward's ops on forward's values: the
    same indices) and the gradient routed back through ReLU and max-pool; BatchNorm's backward then runs in
    closed form, ``gx = a·gz + b·x + c`` per channel, its two sums per channel taken as the chunks pass
    (PyTorch's own BatchNorm backward kernel, asked for the weight and bias gradients only).
    """
    mean, invstd, alpha, beta = stats
    if _kernel_pool(parts, pool, relu):
        return _kernel_backward(parts, grads, gxs, stats, training)
    gw = parts[0].new_zeros(parts[0].shape[1])  # sum(gz · x̂), x̂ = (x - mean) · invstd
    s1 = parts[0].new_zeros(parts[0].shape[1])  # sum(gz)
    for xs, g, gs in _in_cache(parts, grads, gxs):
        pooled, idx = _norm_pool(xs, alpha, beta, pool)  # forward's own ops: the same indices
        if relu:
            g = torch.ops.aten.threshold_backward(g, pooled, 0)  # ReLU's: output > 0
        if pool is None:
            gs.copy_(g)
        else:
            torch.ops.aten.max_pool2d_with_indices_backward.grad_input(g, xs, *pool, idx, grad_input=gs)
        _, w_part, b_part = torch.ops.aten.native_batch_norm_backward(
            gs, xs, None, None, None, mean, invstd, True, 0.0, [False, True, True]
        )
        gw += w_part
        s1 += b_part
    if training:  # x moves the batch statistics too: gx = a·gz + b·x + c
        a = alpha.view(-1)  # invstd · weight, per channel
        m = sum(p.numel() for p in parts) // parts[0].shape[1]
        b = (-a * invstd * gw / m).view(1, -1, 1, 1)
        c = (-a * s1 / m).view(1, -1, 1, 1) - b * mean.view(1, -1, 1, 1)
    for xs, _, gs in _in_cache(parts, gxs, gxs):
        if training:
            torch.addcmul(torch.addcmul(c, xs, b), gs, alpha, out=gs)
        else:
            gs.mul_(alpha)
    return gw, s1  # d/dweight = sum(gz · x̂), d/dbias = sum(gz)


def _kernel_backward(parts, grads, gxs, stats, training: bool):
    """:func:`norm_backward` by :mod:`.pool_kernels`: the two sums per channel over all parts (one pass), then each
    part's input gradient in closed form (a second pass), written into ``gxs``."""
    mean, invstd, alpha, beta = stats
    grads = [g.contiguous(memory_format=torch.channels_last) for g in grads]  # once for both passes
    s1 = s2 = 0
    for xs, g in zip(parts, grads, strict=True):
        p1, p2 = pool_kernels.grad_sums(xs, g, alpha, beta, mean)
        s1, s2 = s1 + p1, s2 + p2
    gw = (s2 * invstd.double()).to(parts[0].dtype)  # sum(gz · x̂)
    gb = s1.to(parts[0].dtype)  # sum(gz)
    a = alpha.view(-1)
    if training:  # gx = a·gz + b·x + c: x moves the batch statistics too
        m = sum(p.numel() for p in parts) // parts[0].shape[1]
        b = -a * invstd * gw / m
        c = -a * gb / m - b * mean
    else:
        b = c = torch.zeros_like(a)
    for xs, g, gs in zip(parts, grads, gxs, strict=True):
        pool_kernels.grad_input(xs, g, alpha, beta, a, b, c, out=gs)
    return gw, gb


def _in_cache(parts, grads, gxs):
    """``(part, its gradient, its input-gradient buffer)`` triples, each part split into ``CHUNK_BYTES`` pieces."""
    for xs, g, gs in zip(parts, grads, gxs, strict=True):
        step = _chunk(xs)
        if xs.shape[0] <= step:
            yield xs, g, gs
            continue
        yield from zip(xs.split(step), g.split(step), gs.split(step), strict=True)


def _norm_pool(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, pool: tuple | None):
    """BatchNorm as ``x·alpha + beta`` (per channel, ``(1, C, 1, 1)``), then max-pool: ``(b, C, H, W)`` →
    pooled ``(b, C, H', W')`` and its int64 indices (no pooling and None without ``pool``). Forward and backward
    both call it, so the recomputed indices are forward's."""
    z = torch.addcmul(beta, x, alpha)
    return (z, None) if pool is None else torch.ops.aten.max_pool2d_with_indices(z, *pool)


def _chunk(x: torch.Tensor) -> int:
    """Frames of ``x`` ``(B, C, H, W)`` per chunk: about ``CHUNK_BYTES``."""
    return max(1, CHUNK_BYTES // max(1, x[0].numel() * x.element_size()))


def bn_pool_relu(y: torch.Tensor, bn: nn.BatchNorm2d, pool: nn.MaxPool2d) -> torch.Tensor:
    """``pool(relu(bn(y)))`` for training, as one of the autograd functions above where one applies, else as the
    three modules (no gradient, another dtype, an empty batch, BatchNorm's own error for one value per channel).

    Args: y ``(B, C, H, W)``. Returns ``(B, C, H', W')``.
    """
    if not y.requires_grad or y.dtype not in (torch.float32, torch.bfloat16) or not fusable_batch(bn, y.shape):
        return pool(torch.relu(bn(y)))
    fn = ChunkedBatchNormPoolReLU if y.dtype == torch.float32 else BatchNormPoolReLU
    return fn.apply(y, *bn_args(bn), pool_args(pool))


def fusable_batch(bn: nn.BatchNorm2d, shape: torch.Size | tuple) -> bool:
    """False for a batch of ``shape`` ``(B, C, H, W)`` the fused steps leave to BatchNorm itself: an empty one,
    or one value per channel in training (BatchNorm's own error)."""
    values = math.prod(shape)
    training = bn.training or bn.running_mean is None
    return values > 0 and not (training and values // shape[1] <= 1)


def bn_args(bn: nn.BatchNorm2d) -> tuple:
    """``(weight, bias, running_mean, running_var, training, momentum, eps)`` for one training call of ``bn``,
    its counter of batches moved as BatchNorm2d moves it (the momentum of a cumulative average follows it)."""
    training = bn.training or bn.running_mean is None
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average, as BatchNorm2d does
            momentum = 1.0 / float(bn.num_batches_tracked)
    use_stats = not bn.training or bn.track_running_stats
    stats = (bn.running_mean, bn.running_var) if use_stats else (None, None)
    return bn.weight, bn.bias, *stats, training, momentum, bn.eps


def pool_args(pool: nn.MaxPool2d) -> tuple:
    """Max-pool's arguments as ``max_pool2d_with_indices`` takes them, after the input."""
    return _pair(pool.kernel_size), _pair(pool.stride), _pair(pool.padding), _pair(pool.dilation), pool.ceil_mode


def bn_runs(leaves: list[nn.Module], partial: bool) -> list:
    """``leaves`` as steps: each BatchNorm2d with the ReLU and MaxPool2d that follow it as one tuple
    ``(bn, pool or None, relu: bool)``, every other module as itself. With ``partial`` False only whole
    BatchNorm2d - ReLU - MaxPool2d runs are grouped; with True a BatchNorm2d alone, or followed by ReLU, is too."""
    steps: list = []
    i = 0
    while i < len(leaves):
        bn, relu, pool = (*leaves[i : i + 3], None, None)[:3]
        relu_ok = type(relu) is nn.ReLU
        pool_ok = relu_ok and type(pool) is nn.MaxPool2d and not pool.return_indices
        if type(bn) is nn.BatchNorm2d and (partial or pool_ok):
            steps.append((bn, pool if pool_ok else None, relu_ok))
            i += 1 + relu_ok + pool_ok
        else:
            steps.append(leaves[i])
            i += 1
    return steps


class FusedChain:
    """Runs a chain of modules ``(B, C, H, W) -> (B, *out)`` one after the other, each BatchNorm2d - ReLU - MaxPool2d
    run (as in conv - BN - ReLU - max-pool blocks) as :func:`bn_pool_relu`.

    Args:
        leaves: the chain's modules in order; they are called, not copied, so their parameters train.
    """

    def __init__(self, leaves: list[nn.Module]):
        self.steps = bn_runs(leaves, partial=False)

    @staticmethod
    def applies(leaves: list[nn.Module]) -> bool:
        """True when ``leaves`` hold a BatchNorm2d - ReLU - MaxPool2d run."""
        return any(isinstance(step, tuple) for step in bn_runs(leaves, partial=False))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            if isinstance(step, tuple):
                x = bn_pool_relu(x, step[0], step[1])
            else:  # a 3x3 convolution by Winograd where it applies
                done = winograd_train.conv_parts(step, [x])
                x = step(x) if done is None else done[0]
        return x
