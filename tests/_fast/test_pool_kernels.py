"""numba's one-pass BatchNorm - 2x2 max-pool - ReLU kernels against PyTorch's own ops: values, the routed gradient
(first maximum, last NaN), ReLU's backward, floor mode, and the switch back to PyTorch's kernels."""

import os

import pytest
import torch

from cnnlstm._fast import pool_kernels, train_block

pytestmark = pytest.mark.skipif(not pool_kernels.available(), reason="numba is not installed")

HALVING = train_block.HALVING


def _cl(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def _affine(c: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(c, generator=g) * 2 - 1, torch.randn(c, generator=g)  # negative scales too


def _reference(x, alpha, beta):
    """PyTorch's ops: the affine map, max-pool with indices, ReLU."""
    z = x * alpha.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)
    return torch.relu(torch.nn.functional.max_pool2d(z, 2))


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (2, 3)])
def test_forward_equals_pytorchs_ops(size):
    x = _cl(torch.randn(3, 5, *size, generator=torch.Generator().manual_seed(1)))
    alpha, beta = _affine(5)
    out = pool_kernels.norm_pool_relu(x, alpha, beta)
    assert out.shape == (3, 5, size[0] // 2, size[1] // 2)
    assert out.permute(0, 2, 3, 1).is_contiguous()  # channels-last
    torch.testing.assert_close(out, _reference(x, alpha, beta), rtol=0, atol=1e-6)


def test_forward_propagates_nan_as_max_pool_and_relu_do():
    x = _cl(torch.zeros(1, 2, 4, 4))
    x[0, 0, 1, 1] = float("nan")  # a NaN beside larger values: the window is NaN
    x[0, 0, 0, 0] = 5.0
    x[0, 1, 2, 2] = float("-inf")
    ones, zeros = torch.ones(2), torch.zeros(2)
    out = pool_kernels.norm_pool_relu(x, ones, zeros)
    ref = _reference(x, ones, zeros)
    assert torch.isnan(out[0, 0, 0, 0]) and torch.isnan(ref[0, 0, 0, 0])
    torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)


def _torch_backward(x, grad, alpha, beta):
    """The gradient w.r.t. the normalized values gz, routed by PyTorch's own max-pool and ReLU backward."""
    z = (x * alpha.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)).requires_grad_()
    torch.relu(torch.nn.functional.max_pool2d(z, 2)).backward(grad)
    return z.grad


@pytest.mark.parametrize("case", ["random", "ties", "nan", "odd"])
def test_backward_routes_the_gradient_as_pytorch_does(case):
    gen = torch.Generator().manual_seed(2)
    size = (7, 9) if case == "odd" else (6, 8)
    x = torch.randn(2, 4, *size, generator=gen)
    if case == "ties":  # whole windows of equal values, zeros (ReLU's edge) among them: the first maximum wins
        x = torch.randint(-1, 2, x.shape, generator=gen).float()
    if case == "nan":
        x[0, 1, 0, 1] = x[0, 1, 1, 0] = float("nan")  # two NaNs in one window: PyTorch routes to the last
        x[1, 2, 3, 3] = float("nan")
    x = _cl(x)
    alpha, beta = _affine(4)
    grad = _cl(torch.randn(2, 4, size[0] // 2, size[1] // 2, generator=gen))
    gz = _torch_backward(x, grad, alpha, beta)
    mean = torch.randn(4, generator=gen)
    ka, kb, kc = (torch.randn(4, generator=gen) for _ in range(3))
    gx = pool_kernels.grad_input(x, grad, alpha, beta, ka, kb, kc)
    expected = ka.view(1, -1, 1, 1) * gz + kb.view(1, -1, 1, 1) * x + kc.view(1, -1, 1, 1)
    torch.testing.assert_close(gx, expected, rtol=1e-6, atol=1e-6, equal_nan=True)
    s1, s2 = pool_kernels.grad_sums(x, grad, alpha, beta, mean)
    finite = torch.where(torch.isnan(x), 0.0, x).double()  # a NaN's own gradient: PyTorch's sum is NaN too
    torch.testing.assert_close(s1, gz.double().sum((0, 2, 3)), rtol=1e-6, atol=1e-6)
    ref2 = (gz.double() * (finite - mean.double().view(1, -1, 1, 1))).sum((0, 2, 3))
    if case == "nan":
        ref2 = torch.where(torch.isnan((gz.double() * x.double()).sum((0, 2, 3))), torch.nan, ref2)
    torch.testing.assert_close(s2, ref2, rtol=1e-6, atol=1e-5, equal_nan=True)


def test_the_kernels_take_only_float32_channels_last_frames():
    x = torch.randn(2, 3, 4, 4)
    assert pool_kernels.takes(_cl(x))
    assert not pool_kernels.takes(x.contiguous())  # NCHW
    assert not pool_kernels.takes(_cl(x.double()))
    assert not pool_kernels.takes(_cl(torch.randn(2, 3, 1, 4)))  # no 2x2 window


def test_switched_off_the_block_runs_pytorchs_kernels(monkeypatch):
    calls = []
    monkeypatch.setattr(pool_kernels, "norm_pool_relu", lambda *a: calls.append(a) or _reference(*a))
    x = _cl(torch.randn(2, 3, 6, 6))
    stats = train_block.norm_stats([x], None, None, None, None, True, 0.1, 1e-5)
    train_block.norm_forward([x], stats, HALVING, relu=True)
    assert len(calls) == 1
    monkeypatch.setattr(pool_kernels, "ENABLED", False)
    train_block.norm_forward([x], stats, HALVING, relu=True)
    assert len(calls) == 1  # PyTorch's ops, not the kernel
    train_block.norm_forward([x], stats, ((3, 3), (2, 2), (1, 1), (1, 1), False), relu=True)
    assert len(calls) == 1  # another pool: PyTorch's


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_runs_pytorchs_kernels_and_lives(in_forked_child):
    """GNU OpenMP (numba's pool) kills a forked child at its first parallel call; the child falls back."""
    x = _cl(torch.randn(4, 8, 16, 16))
    stats = train_block.norm_stats([x], None, None, None, None, True, 0.1, 1e-5)
    expected = train_block.norm_forward([x], stats, HALVING, relu=True)[0]  # the kernels, in this process

    def child() -> bool:  # the same call in the child
        out = train_block.norm_forward([x], stats, HALVING, relu=True)[0]
        return not pool_kernels.available() and torch.allclose(out, expected, rtol=0, atol=1e-6)

    status, verdict = in_forked_child(child)
    assert status == 0 and verdict == b"1", (status, verdict)
    assert pool_kernels.available()  # the parent keeps them


def test_the_kernels_use_pytorchs_thread_count_and_leave_numbas_setting(monkeypatch):
    import numba

    seen = []
    monkeypatch.setattr(pool_kernels, "_kernels", lambda: [lambda *a: seen.append(numba.get_num_threads())] * 3)
    before = numba.get_num_threads()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        pool_kernels.norm_pool_relu(_cl(torch.randn(1, 2, 4, 4)), torch.ones(2), torch.zeros(2))
    finally:
        torch.set_num_threads(threads)
    assert seen == [1]
    assert numba.get_num_threads() == before
