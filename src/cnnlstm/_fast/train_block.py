"""BatchNorm - ReLU - max-pool as one autograd step for training, keeping less for backward than the three modules.

The plain chain keeps BatchNorm's full-size output alive until backward (ReLU and max-pool save it), max-pool's
int64 indices, and runs ReLU and its backward at full size. ReLU commutes with max-pooling, so here it runs on the
pooled quarter of the values, and each function keeps only what its backward reads: :class:`BatchNormPoolReLU`
(bfloat16) frees BatchNorm's output as soon as it is pooled; :class:`ChunkedBatchNormPoolReLU` (float32) keeps
neither that output nor the indices and recomputes them chunk by chunk. :class:`FusedChain` runs a chain of modules
with each BatchNorm2d - ReLU - MaxPool2d run through one of them. Outputs and gradients equal the plain chain's
(to float32 rounding: some sums run in another order).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.utils import _pair

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
    @torch.autograd.function.once_differentiable
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
    time (in cache), so no full-size normalized tensor exists. Backward recomputes each chunk's normalized
    values, pooled values and indices (the same ops on the same values: the same indices), routes the gradient
    through ReLU and max-pool chunk by chunk, and finishes BatchNorm's backward in closed form, in place:
    ``gx = a·gz + b·x + c`` per channel, with its two sums per channel taken as the chunks pass (PyTorch's own
    BatchNorm backward kernel, asked for the weight and bias gradients only).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps, pool):
        if training:  # batch statistics; the running ones (if any) move as BatchNorm moves them
            mean, var = torch.batch_norm_update_stats(x, running_mean, running_var, momentum)
            invstd = (var + eps).rsqrt()
        else:
            mean, invstd = running_mean, (running_var + eps).rsqrt()
        alpha = invstd if weight is None else invstd * weight
        beta = -mean * alpha if bias is None else bias - mean * alpha
        alpha, beta = alpha.view(1, -1, 1, 1), beta.view(1, -1, 1, 1)
        step = _chunk(x)
        parts = [_norm_pool(c, alpha, beta, pool)[0] for c in x.split(step)]
        p = parts[0] if len(parts) == 1 else torch.cat(parts)
        p.relu_()  # not saved: backward recomputes the pooled values, so in-place ops on the output stay legal
        ctx.save_for_backward(x, mean, invstd, alpha, beta)
        ctx.training, ctx.pool, ctx.step = training, pool, step
        return p  # (B, C, H', W')

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, mean, invstd, alpha, beta = ctx.saved_tensors
        gx = torch.empty_like(x)  # first the gradient w.r.t. BatchNorm's output, then, in place, w.r.t. x
        step = ctx.step
        gw = x.new_zeros(x.shape[1])  # sum(gz · x̂), x̂ = (x - mean) · invstd
        s1 = x.new_zeros(x.shape[1])  # sum(gz)
        for s in range(0, x.shape[0], step):
            xs, gs = x[s : s + step], gx[s : s + step]
            pooled, idx = _norm_pool(xs, alpha, beta, ctx.pool)  # forward's own ops: the same indices
            g = torch.ops.aten.threshold_backward(grad[s : s + step], pooled, 0)  # ReLU's: pooled > 0
            torch.ops.aten.max_pool2d_with_indices_backward.grad_input(g, xs, *ctx.pool, idx, grad_input=gs)
            # this chunk's share of both sums, in one of PyTorch's kernels (given the whole batch's statistics)
            _, w_part, b_part = torch.ops.aten.native_batch_norm_backward(
                gs, xs, None, None, None, mean, invstd, True, 0.0, [False, True, True]
            )
            gw += w_part
            s1 += b_part
        a = alpha.view(-1)  # invstd · weight, per channel
        if ctx.training:  # x moves the batch statistics too: gx = a·gz + b·x + c
            m = x.numel() // x.shape[1]
            b = -a * invstd * gw / m
            c = -a * s1 / m - b * mean
            b, c = b.view(1, -1, 1, 1), c.view(1, -1, 1, 1)
        for s in range(0, x.shape[0], step):
            gs = gx[s : s + step]
            if ctx.training:
                torch.addcmul(torch.addcmul(c, x[s : s + step], b), gs, alpha, out=gs)
            else:
                gs.mul_(alpha)
        gw = gw if ctx.needs_input_grad[1] else None
        gb = s1 if ctx.needs_input_grad[2] else None  # d/dbias = sum(gz)
        return gx, gw, gb, None, None, None, None, None, None


def _norm_pool(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, pool: tuple):
    """BatchNorm as ``x·alpha + beta`` (per channel, ``(1, C, 1, 1)``), then max-pool: ``(b, C, H, W)`` →
    pooled ``(b, C, H', W')`` and its int64 indices. Forward and backward both call it, so the recomputed
    indices are forward's."""
    return torch.ops.aten.max_pool2d_with_indices(torch.addcmul(beta, x, alpha), *pool)


def _chunk(x: torch.Tensor) -> int:
    """Frames of ``x`` ``(B, C, H, W)`` per chunk: about ``CHUNK_BYTES``."""
    return max(1, CHUNK_BYTES // max(1, x[0].numel() * x.element_size()))


def bn_pool_relu(y: torch.Tensor, bn: nn.BatchNorm2d, pool: nn.MaxPool2d) -> torch.Tensor:
    """``pool(relu(bn(y)))`` for training, as one of the autograd functions above where one applies, else as the
    three modules (no gradient, another dtype, an empty batch, BatchNorm's own error for one value per channel).

    Args: y ``(B, C, H, W)``. Returns ``(B, C, H', W')``.
    """
    training = bn.training or bn.running_mean is None
    if (
        not y.requires_grad
        or y.dtype not in (torch.float32, torch.bfloat16)
        or y.numel() == 0
        or (training and y.numel() // y.shape[1] <= 1)
    ):
        return pool(torch.relu(bn(y)))
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average, as BatchNorm2d does
            momentum = 1.0 / float(bn.num_batches_tracked)
    use_stats = not bn.training or bn.track_running_stats
    args = (_pair(pool.kernel_size), _pair(pool.stride), _pair(pool.padding), _pair(pool.dilation), pool.ceil_mode)
    fn = ChunkedBatchNormPoolReLU if y.dtype == torch.float32 else BatchNormPoolReLU
    return fn.apply(
        y,
        bn.weight,
        bn.bias,
        bn.running_mean if use_stats else None,
        bn.running_var if use_stats else None,
        training,
        momentum,
        bn.eps,
        args,
    )


def _fusable(bn: nn.Module, relu: nn.Module, pool: nn.Module) -> bool:
    return (
        type(bn) is nn.BatchNorm2d
        and type(relu) is nn.ReLU
        and type(pool) is nn.MaxPool2d
        and not pool.return_indices
    )


class FusedChain:
    """Runs a chain of modules ``(B, C, H, W) -> (B, *out)`` one after the other, each BatchNorm2d - ReLU - MaxPool2d
    run (as in conv - BN - ReLU - max-pool blocks) as :func:`bn_pool_relu`.

    Args:
        leaves: the chain's modules in order; they are called, not copied, so their parameters train.
    """

    def __init__(self, leaves: list[nn.Module]):
        self.steps: list = []
        i = 0
        while i < len(leaves):
            if i + 3 <= len(leaves) and _fusable(*leaves[i : i + 3]):
                self.steps.append((leaves[i], leaves[i + 2]))
                i += 3
            else:
                self.steps.append(leaves[i])
                i += 1

    @staticmethod
    def applies(leaves: list[nn.Module]) -> bool:
        """True when ``leaves`` hold a BatchNorm2d - ReLU - MaxPool2d run."""
        return any(_fusable(*leaves[i : i + 3]) for i in range(len(leaves) - 2))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = bn_pool_relu(x, *step) if isinstance(step, tuple) else step(x)
        return x
