"""The training plan's fused BatchNorm - ReLU - max-pool steps: outputs, gradients and statistics equal the plain
chain's, and less is kept for backward."""

import contextlib
import copy

import pytest
import torch
from torch import nn

from cnnlstm import SmallCNN, TimeDistributed
from cnnlstm._fast import pool_kernels, train_block
from cnnlstm._fast.plan import plan_for
from cnnlstm.layers.time_distributed import freeze_batchnorm


def _chain(cnn: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``cnn``'s modules one after the other, as plain ``nn.Sequential`` runs them."""
    for m in cnn:
        x = _chain(m, x) if isinstance(m, torch.nn.Sequential) else m(x)
    return x


def _block(c_out: int, pool: int = 2, **bn) -> torch.nn.Sequential:
    """A seeded ``conv 3x3 - BatchNorm - ReLU - maxpool`` block on 3 channels."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, c_out, 3, padding=1),
        torch.nn.BatchNorm2d(c_out, **bn),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(pool),
    )


@pytest.fixture(autouse=True, params=["chunks", "whole"])
def training_path(request, monkeypatch):
    """Every test on both training paths: chunks of 2 frames (a plain glibc process's) and the whole batch in one
    call (a process with a tuned allocator; bfloat16)."""
    chunks = request.param == "chunks"
    monkeypatch.setattr("cnnlstm._fast.plan.untuned", lambda: chunks)  # float32 outside autocast
    monkeypatch.setattr("cnnlstm._fast.chunked_train.ChunkedChain.frames_per_chunk", lambda self, x: 2)
    return request.param


def _fast(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return plan_for(block, x)(x)


def _weighted_sum(out: torch.Tensor) -> torch.Tensor:
    """A loss whose gradient differs at every output value (the same weights for the same shape)."""
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    return (out.float() * weights).sum()


_BN_CASES = {
    "momentum": dict(),
    "cumulative": dict(momentum=None),
    "no-affine": dict(affine=False),
    "no-stats": dict(track_running_stats=False),
}


@pytest.mark.parametrize("size", [(9, 10), (240, 240)])  # (240, 240): chunks of 4 MiB, 3 frames of 4, one ragged
@pytest.mark.parametrize(
    ("case", "frozen"),
    [(c, False) for c in _BN_CASES] + [(c, True) for c in _BN_CASES if c != "no-stats"],  # eval BN needs stats
)
@pytest.mark.parametrize("kernels", [True, False], ids=["numba", "pytorch"])  # pool_kernels, or PyTorch's ops
def test_fused_training_block_equals_the_plain_chain(case, frozen, size, training_path, kernels, monkeypatch):
    monkeypatch.setattr(pool_kernels, "ENABLED", kernels)
    block = _block(6, **_BN_CASES[case])
    bn = block[1]
    if bn.affine:
        torch.nn.init.uniform_(bn.weight, -1.0, 1.0)  # negative scales too: pooling must still come after BatchNorm
        torch.nn.init.uniform_(bn.bias, -0.5, 0.5)
    if frozen:
        freeze_batchnorm(block)
    plain = copy.deepcopy(block)
    exact = copy.deepcopy(block).double()
    same_ops = training_path == "whole" and not kernels  # PyTorch's kernels on the whole batch, as the plain chain
    # the plan runs channels_last frames; PyTorch's own channels_last kernels sum in another order than its NCHW
    # ones (gradients apart by up to 2e-3 of the largest at 240x240), so the reference takes the same layout
    x = torch.randn(4, 3, *size).contiguous(memory_format=torch.channels_last)
    for _ in range(2):  # twice: the running statistics and the step count move as BatchNorm moves them
        out, ref, ref64 = _fast(block, x), _chain(plain, x), _chain(exact, x.double())
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)
        # and no further from the exact (float64) outputs than the plain float32 chain, or within 1e-6 of it on
        # the whole batch (PyTorch's kernels: the same ops). numba's statistics sum in float64: at 240x240 their
        # outputs are 1.2e-6 from the exact ones, the plain chain's 5.5e-5
        plain_error = (ref.double() - ref64).abs().max().item()
        atol = 1e-6 if same_ops else 1e-4
        assert (out.double() - ref64).abs().max().item() <= max(plain_error, atol) or torch.allclose(out, ref, 0, atol)
        for y in (out, ref, ref64):
            _weighted_sum(y).backward()
    # the whole batch on PyTorch's kernels: float32 BatchNorm backward in closed form sums in another order than
    # PyTorch's, equal to 1e-5 of the largest gradient (the conv bias's is 0 up to rounding under batch statistics,
    # so its own scale is no yardstick). In chunks, or with numba's kernels (float64 sums), the sums run nearer the
    # exact (float64) gradients than the plain float32 chain (at 240x240: 8.5e-6 of the largest against its
    # 6.6e-4), so they are held to those
    scale = max(b.grad.abs().max().item() for b in plain.parameters() if b.grad is not None)
    for (name, a), b, e in zip(block.named_parameters(), plain.parameters(), exact.parameters(), strict=True):
        if b.grad is None:
            assert a.grad is None, name
        elif same_ops:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5 * scale, msg=name)
        else:
            plain_error = (b.grad - e.grad).abs().max().item()
            assert (a.grad - e.grad).abs().max().item() <= max(plain_error, 2e-5 * scale), name
    for (name, a), b, e in zip(block.named_buffers(), plain.buffers(), exact.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6 if same_ops else 1e-5, msg=name)  # running statistics
        if a.is_floating_point() and not same_ops:  # and as near the exact ones as the plain chain's (or 1e-6)
            assert (a.double() - e).abs().max() <= max((b.double() - e).abs().max().item(), 1e-6), name


def _saved_bytes(run, x: torch.Tensor) -> tuple[int, set]:
    """Bytes of the distinct storages autograd keeps for backward while ``run(x)`` runs, and their dtypes."""
    seen: dict[int, int] = {}
    dtypes: set = set()

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        dtypes.add(t.dtype)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run(x)
    return sum(seen.values()), dtypes


def _users_backbone() -> torch.nn.Sequential:
    """A user's own ``nn.Sequential`` of the standard layers, flat, no cnnlstm class."""
    torch.manual_seed(0)
    layers, c_in = [], 3
    for c in (8, 16):
        layers += [torch.nn.Conv2d(c_in, c, 3, padding=1), torch.nn.BatchNorm2d(c)]
        layers += [torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
        c_in = c
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("make", [lambda: SmallCNN(channels=(8, 16)), _users_backbone], ids=["small", "users"])
def test_fused_training_keeps_less_for_backward(make):
    cnn = make().train()
    x = torch.randn(4, 3, 32, 32)
    fused, dtypes = _saved_bytes(lambda x: _fast(cnn, x), x)
    assert torch.int64 not in dtypes  # no max-pool indices kept: backward recomputes them
    plain, _ = _saved_bytes(lambda x: _chain(cnn, x), x)
    # per block the plain chain also keeps BatchNorm's full-size output (ReLU and max-pool save it) and the
    # int64 indices (half the bytes of the block's input)
    assert fused < 0.6 * plain, (fused, plain)
    through_td, _ = _saved_bytes(lambda x: TimeDistributed(cnn)(x[None]), x)
    assert through_td == fused  # TimeDistributed takes the same plan


def test_fused_training_block_under_bf16_autocast_equals_the_plain_chain():
    block = _block(8)
    plain = copy.deepcopy(block)
    x = torch.randn(4, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = _fast(block, x), _chain(plain, x)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    out.float().sum().backward()
    ref.float().sum().backward()
    # the weight's gradient is reduced over the batch in bfloat16, in an order that differs between CPUs (exact on
    # an Intel Xeon with AMX, a few bfloat16 steps apart on an AMD EPYC): equal to bfloat16's resolution
    g, want = block[0].weight.grad, plain[0].weight.grad
    torch.testing.assert_close(g, want, rtol=0, atol=float(want.abs().max()) * 2**-7)
    torch.testing.assert_close(block[1].running_var, plain[1].running_var, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bf16", [False, True])
def test_fused_training_block_trains_a_bias_beside_a_frozen_weight(bf16):
    block = _block(4)
    block[1].weight.requires_grad_(False)
    plain = copy.deepcopy(block)
    x = torch.randn(3, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        out, ref = _fast(block, x), _chain(plain, x)
    _weighted_sum(out).backward()
    _weighted_sum(ref).backward()
    assert block[1].weight.grad is None and block[1].bias.grad is not None
    torch.testing.assert_close(block[1].bias.grad, plain[1].bias.grad, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("bf16", [False, True])
def test_fused_training_block_output_can_be_changed_in_place(bf16):
    block = _block(4)
    plain = copy.deepcopy(block)
    x = torch.randn(3, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        out, ref = _fast(block, x).mul_(2), _chain(plain, x).mul_(2)  # e.g. Dropout(inplace=True) after the block
    out.float().sum().backward()
    ref.float().sum().backward()
    torch.testing.assert_close(block[0].weight.grad, plain[0].weight.grad, rtol=1e-4, atol=1e-5)


def test_fused_training_block_keeps_batchnorms_errors_and_empty_batches():
    block = _block(4, pool=1)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        _fast(block, torch.randn(1, 3, 1, 1))
    assert _fast(block, torch.randn(0, 3, 8, 8)).shape == (0, 4, 8, 8)


@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1)], ids=["halving", "3x3"])
def test_forward_pooling_without_indices_equals_max_pool(size, pool):
    torch.manual_seed(0)
    z = torch.randn(2, 4, *size).contiguous(memory_format=torch.channels_last)
    z[0, 1, 0, 0], z[1, 2, 3, 3], z[1, 3] = float("nan"), float("-inf"), 0.0  # NaN wins, as in max_pool2d; ties
    ref = torch.nn.functional.max_pool2d(z, pool.kernel_size, pool.stride, pool.padding)
    out = torch.full(ref.shape, 7.0).contiguous(memory_format=torch.channels_last)
    train_block._max_pool(z, train_block.pool_args(pool), out)
    torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)
