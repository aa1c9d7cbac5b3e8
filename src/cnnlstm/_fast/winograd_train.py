"""Winograd F(4x4, 3x3) convolutions in a float32 training step: the forward convolution and its input gradient
(a 3x3 convolution of the output gradient with the weight turned 180° and its channels swapped) run as
:meth:`.winograd.WinogradBlock.full`, the weight gradient as PyTorch's own (oneDNN).

Used by :class:`.chunked_train.ChunkedChain` and :class:`.train_block.FusedChain` for each ``nn.Conv2d`` (Conv2d's own
forward) that :func:`applies` to; the weights are transformed once a step (forward) and once a backward (the turned
weight), the GEMM way each block shape runs is chosen once per process (:data:`.winograd.GEMM`). Outputs and
gradients differ from PyTorch's by float32 rounding in another order.

Measured on the reference model (AMD EPYC Zen 4, 2 cores; training steps with and without, alternated in one
process, medians): as the command runs it (mimalloc, the whole batch at once) 1.07x at batch 8 and 1.18x at batch 32;
a user's chain in a plain ``python`` (chunks of 7 frames, where each call's GEMMs are small) 1.045x at batch 8. Per
call on 7 frames, the forward took 2.3-3.2 ms against oneDNN's 3.9-4.0 ms for blocks 2-4 of the reference model, the
input gradient 1.8-3.2 ms against the input-and-weight backward's 7.5-9.6 ms less the weight gradient's 4.2-5.0 ms
(noisy: block 2's forward took 6.2 ms in one process). Both weight transforms of block 4 take 3.7 ms a step.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from . import winograd
from .switch import once_differentiable
from .threads import numba_threads

__all__ = ["ENABLED", "WinogradConv", "applies", "conv_parts"]

ENABLED = True  # False: PyTorch's convolutions in training steps (inference keeps :data:`.winograd.ENABLED`)

# each convolution's GEMM choices (forward, input gradient), kept while the module lives
_CHOSEN: weakref.WeakKeyDictionary[nn.Conv2d, tuple[dict, dict]] = weakref.WeakKeyDictionary()


def applies(conv: nn.Module, x: torch.Tensor) -> bool:
    """True for an ``nn.Conv2d`` with Conv2d's own forward, 3x3, stride 1, padding 1 (zeros), no dilation,
    ungrouped, at least :data:`.winograd.MIN_CHANNELS` input channels, float32 weights, on float32 CPU frames ``x``
    ``(B, C, H, W)`` outside autocast, where the kernels run (:func:`.winograd.available`)."""
    return (
        type(conv) is nn.Conv2d
        and tuple(conv.kernel_size) == (3, 3)
        and tuple(conv.stride) == (1, 1)
        and conv.padding in ((1, 1), [1, 1])
        and tuple(conv.dilation) == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.in_channels >= winograd.MIN_CHANNELS
        and conv.weight.dtype == torch.float32
        and x.dtype == torch.float32
        and x.dim() == 4
        and x.device.type == "cpu"
        and not torch.is_autocast_enabled("cpu")
        and ENABLED
        and winograd.available()
    )


class _Step:
    """One training step's transformed weights of a convolution: forward's now, the input gradient's on the first
    backward that needs them (then shared by the step's chunks)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, chosen: tuple[dict, dict]):
        self.weight, self.chosen = weight.detach(), chosen
        self.forward = winograd.WinogradBlock(self.weight, bias, chosen[0], exact=False)
        self._backward: winograd.WinogradBlock | None = None

    @property
    def backward(self) -> winograd.WinogradBlock:
        if self._backward is None:  # the input gradient: the weight turned 180°, its channels swapped
            turned = self.weight.flip(2, 3).transpose(0, 1)  # (Ci, Co, 3, 3)
            self._backward = winograd.WinogradBlock(turned, None, self.chosen[1], exact=False)
        return self._backward


class WinogradConv(torch.autograd.Function):
    """``conv2d(x, weight, bias, padding=1)``: x ``(B, Ci, H, W)`` → ``(B, Co, H, W)`` channels-last, forward and
    input gradient by Winograd (``step``: a :class:`_Step` of ``weight``), the weight's and bias's gradients by
    PyTorch's ``convolution_backward``. Keeps x (channels-last) for backward, as PyTorch's convolution does."""

    @staticmethod
    def forward(ctx, x, weight, bias, step):
        x = x.contiguous(memory_format=torch.channels_last)
        with numba_threads():
            y = step.forward.full(x.permute(0, 2, 3, 1))  # (B, H, W, Co)
        ctx.save_for_backward(x, weight)
        ctx.step, ctx.bias = step, None if bias is None else list(bias.shape)
        return y.permute(0, 3, 1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            with numba_threads():
                gx = ctx.step.backward.full(grad.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            mask = [False, ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
            _, gw, gb = torch.ops.aten.convolution_backward(
                grad, x, weight, ctx.bias, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask
            )
        return gx, gw, gb, None


def conv_parts(conv: nn.Conv2d, parts: list[torch.Tensor], weight: torch.Tensor | None = None) -> list | None:
    """``conv`` on each of ``parts`` (chunks of one step's frames, ``(b, Ci, H, W)``) by :class:`WinogradConv`, the
    weights transformed once for all of them; None where it does not :func:`applies` (run the module instead).

    Args:
        weight: the weight to use and differentiate (``conv.weight`` or a channels-last copy of it).
    """
    if not parts or not applies(conv, parts[0]):
        return None
    weight = conv.weight if weight is None else weight
    chosen = _CHOSEN.setdefault(conv, ({}, {}))
    step = _Step(weight, conv.bias, chosen)
    try:
        return [WinogradConv.apply(p, weight, conv.bias, step) for p in parts]
    except Exception as err:  # an incompatible numba or LLVM: PyTorch's convolutions from now on
        winograd.failed(err)
        return None
