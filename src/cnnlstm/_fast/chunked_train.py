"""Training a chain of modules on a batch of frames as a list of chunks, so that no tensor of the step is larger
than a chunk's: :class:`ChunkedChain`.

Why: glibc serves an allocation above its mmap threshold (adaptive, at most 32 MiB) with fresh pages and hands
them back on free, so a training step whose activations are hundreds of MB faults all of them in again, 4 KiB at
a time (``PERF-NOTES.md``, finding 1). Below the threshold it serves them from its heap and reuses the memory
from one step to the next. So every module of the chain runs chunk by chunk, each BatchNorm2d as one autograd
step over all the chunks (the whole batch's statistics, :class:`.train_block.PartsBatchNorm`), and only the
chain's output, usually small, is put together. The threshold itself is glibc's own: it rises to the size of the
largest block it has mapped and freed, so the chain maps and frees one block of ``RAISE_BYTES`` once per process
(what any program that frees such a block does), which keeps freed chunks in the heap and raises the size the
heap's top must reach before glibc trims it. No setting of the process is changed.

Measured (Zen 5, 2 cores, the reference model with a user's chain, a plain ``python``): minor page faults per
training step at batch 8 from 62,000-83,000 (whole batch) to 0-385 (with :func:`.alloc.top_pin`); training
1.19x / 1.21x Keras at batch 8 / 32 at the steady state against 0.83x / 0.67x before
(``bench/results/speed_steady_pin.json``; 1.23x / 1.34x with :mod:`.pool_kernels`, ``speed_kernels.json``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from . import alloc, winograd_train
from .train_block import PartsBatchNorm, bn_args, bn_runs, fusable_batch, pool_args

__all__ = ["CHUNK_TRAIN_BYTES", "ChunkedChain"]

CHUNK_TRAIN_BYTES = 12 << 20  # the largest activation of a chunk: well under glibc's 32 MiB ceiling


def _per_frame(x: torch.Tensor) -> int:
    return x[0].numel() * x.element_size() if x.shape[0] else 0


def peak_frame_bytes(steps: list, frame: torch.Tensor) -> int:
    """The largest tensor any step makes for one frame ``(1, C, H, W)``, in bytes, from a dry run on ``meta``
    tensors (shapes only); the frame's own size times 16 when a module cannot run on ``meta``."""
    x = frame.to("meta")
    peak = _per_frame(x)
    try:
        with torch.no_grad():
            for step in steps:
                x = _meta_step(step, x)
                if not isinstance(x, torch.Tensor):
                    break
                peak = max(peak, _per_frame(x))
    except Exception:  # a module of the user's that does not run on meta: a generous guess
        return 16 * _per_frame(frame)
    return peak


def _meta_step(step, x: torch.Tensor):
    if isinstance(step, tuple):  # BatchNorm (shape kept), then max-pool
        pool = step[1]
        return x if pool is None else torch.ops.aten.max_pool2d_with_indices(x, *pool_args(pool))[0]
    return torch.func.functional_call(
        step, {k: v.to("meta") for k, v in (*step.named_parameters(), *step.named_buffers())}, (x,)
    )


def batch_statistics(module: nn.Module) -> bool:
    """True when ``module`` (or one inside it) normalizes by the statistics of its batch, or moves running
    statistics once a call (an InstanceNorm tracking them, in training): it cannot run chunk by chunk."""
    return any(
        (isinstance(m, _BatchNorm) and (m.training or m.running_mean is None))
        or (isinstance(m, _InstanceNorm) and m.training and m.track_running_stats)
        for m in module.modules()
    )


class ChunkedChain:
    """Runs a chain of modules ``(B, C, H, W) -> (B, *out)`` for training chunk by chunk (module by module over
    all chunks, so random draws such as dropout's follow the frames' memory order, as in one call). Each
    BatchNorm2d, with the ReLU and MaxPool2d that follow it, runs as :class:`PartsBatchNorm`; a module with a
    BatchNorm inside runs on the whole batch, put together for it.

    Args:
        leaves: the chain's modules in order; they are called, not copied, so their parameters train.
    """

    def __init__(self, leaves: list[nn.Module]):
        self.steps = bn_runs(leaves, partial=True)
        self.chunk: dict[tuple, int] = {}
        self.pin: torch.Tensor | None = None

    def whole_batch(self) -> bool:
        """True when a module of the chain has a BatchNorm inside and so runs on the whole batch."""
        return any(not isinstance(s, tuple) and batch_statistics(s) for s in self.steps)

    def frames_per_chunk(self, x: torch.Tensor) -> int:
        """Frames per chunk for ``x`` ``(B, C, H, W)``: the largest activation of a chunk about
        ``CHUNK_TRAIN_BYTES``."""
        key = (*x.shape[1:], x.dtype)
        if key not in self.chunk:
            self.chunk[key] = max(1, CHUNK_TRAIN_BYTES // max(1, peak_frame_bytes(self.steps, x[:1])))
        return self.chunk[key]

    def __call__(self, x: torch.Tensor):
        alloc.raise_heap_threshold()
        parts = [p.contiguous(memory_format=torch.channels_last) for p in x.split(self.frames_per_chunk(x))]
        parts = parts or [x.contiguous(memory_format=torch.channels_last)]  # an empty batch: one empty part
        for step in self.steps:
            if isinstance(step, tuple):
                parts = _norm(parts, *step)
            elif batch_statistics(step) or len(parts) == 1:
                whole = step(parts[0] if len(parts) == 1 else torch.cat(parts))
                parts = [whole] if not isinstance(whole, torch.Tensor) else list(whole.split(parts[0].shape[0]))
            elif _plain_conv(step):  # the weight made channels-last once, not once per chunk
                w = step.weight.contiguous(memory_format=torch.channels_last)
                done = winograd_train.conv_parts(step, parts, w)  # a 3x3 convolution: Winograd where it applies
                parts = done or [step._conv_forward(p, w, step.bias) for p in parts]
            else:
                parts = [step(p) for p in parts]
        if torch.is_grad_enabled():
            self.pin = alloc.top_pin(self.pin)
        if len(parts) == 1 or not all(isinstance(p, torch.Tensor) for p in parts):
            return parts[0]
        return torch.cat(parts)  # (B, *out)


def _plain_conv(step) -> bool:
    """True for a Conv2d whose forward is Conv2d's own: the chain calls its convolution with a channels-last copy
    of the weight made once a step (autograd sums the chunks' weight gradients and converts them back once), where
    calling the module converts the weight, and its gradient, once a chunk: 2-3.5% of a training step at batch 8
    (Zen 5, in-process alternated steps)."""
    return isinstance(step, nn.Conv2d) and type(step).forward is nn.Conv2d.forward


def _norm(parts: list[torch.Tensor], bn: nn.BatchNorm2d, pool: nn.MaxPool2d | None, relu: bool) -> list:
    """BatchNorm2d (then ``pool``, then ReLU) over ``parts``, as :class:`PartsBatchNorm`; the modules themselves
    on the put-together batch where that does not apply (no gradient, another dtype, too few values)."""
    shape = (sum(p.shape[0] for p in parts), *parts[0].shape[1:])
    if not any(p.requires_grad for p in parts) or parts[0].dtype != torch.float32 or not fusable_batch(bn, shape):
        y = bn(torch.cat(parts) if len(parts) > 1 else parts[0])
        y = pool(torch.relu(y)) if pool is not None else torch.relu(y) if relu else y
        return list(y.split(parts[0].shape[0]))
    args = None if pool is None else pool_args(pool)
    return list(PartsBatchNorm.apply(*bn_args(bn), args, relu, *parts))
