"""Winograd convolutions in training steps: the forward, the input gradient and the weight's equal PyTorch's
convolution's (float32 rounding in another order), over chunks of a step and at odd frame sizes; what does not
apply runs PyTorch's convolution."""

import pytest
import torch
from torch import nn

from cnnlstm._fast import winograd, winograd_train

pytestmark = pytest.mark.skipif(not winograd.available(), reason="numba's kernels do not run here")


def _conv(ci: int, co: int, bias: bool = True) -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(ci, co, 3, padding=1, bias=bias)


@pytest.mark.parametrize("bias", [True, False])
def test_forward_and_gradients_equal_pytorchs_over_chunks(bias):
    conv = _conv(32, 32, bias)
    x = torch.randn(5, 32, 9, 14, generator=torch.Generator().manual_seed(1), requires_grad=True)  # odd rows
    parts = winograd_train.conv_parts(conv, list(x.split(2)))  # a step's chunks: 2, 2, 1 frames
    assert parts is not None and len(parts) == 3
    got, ref = torch.cat(parts), conv(x)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, ref, rtol=0, atol=5e-5)
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))
    wrt = [x, conv.weight] + ([conv.bias] if bias else [])
    for a, b in zip(torch.autograd.grad(got, wrt, g), torch.autograd.grad(ref, wrt, g), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_the_input_gradient_is_not_made_when_the_input_needs_none(monkeypatch):
    conv = _conv(32, 32)
    x = torch.randn(2, 32, 8, 8)  # a first layer's frames: no gradient wanted
    made = []

    class Spy(winograd_train._Step):
        @property
        def backward(self):
            made.append(1)
            return super().backward

    monkeypatch.setattr(winograd_train, "_Step", Spy)
    (y,) = winograd_train.conv_parts(conv, [x])
    y.sum().backward()
    torch.testing.assert_close(conv.weight.grad, torch.autograd.grad(conv(x).sum(), conv.weight)[0], atol=1e-4, rtol=0)
    assert not made  # no turned weights, no input-gradient kernels
    x.requires_grad_()
    (y,) = winograd_train.conv_parts(conv, [x])
    y.sum().backward()
    assert made == [1]  # the spy sees it when it is


@pytest.mark.parametrize(
    "conv, x",
    [
        (nn.Conv2d(16, 32, 3, padding=1), torch.randn(1, 16, 8, 8)),  # too few input channels
        (nn.Conv2d(32, 32, 3, padding=1, stride=2), torch.randn(1, 32, 8, 8)),
        (nn.Conv2d(32, 32, 3, padding=2, dilation=2), torch.randn(1, 32, 8, 8)),
        (nn.Conv2d(32, 32, 3, padding=1, padding_mode="reflect"), torch.randn(1, 32, 8, 8)),
        (nn.Conv2d(32, 32, 5, padding=2), torch.randn(1, 32, 8, 8)),
        (nn.Conv2d(32, 32, 3, padding=1), torch.randn(1, 32, 8, 8, dtype=torch.float64)),
    ],
)
def test_what_winograd_does_not_take_is_left_to_pytorch(conv, x):
    assert not winograd_train.applies(conv, x)
    assert winograd_train.conv_parts(conv, [x]) is None


def test_switched_off_it_is_left_to_pytorch(monkeypatch):
    conv, x = _conv(32, 32), torch.randn(1, 32, 8, 8)
    assert winograd_train.applies(conv, x)
    monkeypatch.setattr(winograd_train, "ENABLED", False)
    assert winograd_train.conv_parts(conv, [x]) is None


def test_the_gemm_ways_chosen_are_kept_per_convolution_across_steps(monkeypatch):
    monkeypatch.setattr(winograd, "GEMM", "auto")
    timed = []

    def best(ways):
        timed.append(1)
        return "conv"

    monkeypatch.setattr(winograd, "_best", best)
    conv = _conv(32, 32)
    x = torch.randn(2, 32, 8, 8, requires_grad=True)
    for _ in range(3):  # three steps: the forward's and the input gradient's ways timed once each
        (y,) = winograd_train.conv_parts(conv, [x])
        y.sum().backward()
    assert len(timed) == 2
    assert winograd_train._CHOSEN[conv] == ({("full", 2, 2, 2, 8, 8): "conv"}, {("full", 2, 2, 2, 8, 8): "conv"})
