"""Winograd F(4x4, 3x3) conv - max-pool - ReLU blocks at inference against PyTorch's own ops: values at whole and
partial tiles and odd sizes, NaN, which blocks it takes, the inference chain around it, the fallbacks."""

import os
import time
import warnings

import pytest
import torch
from torch import nn

from cnnlstm._fast import winograd
from cnnlstm._fast.onednn import OneDNNPrefix
from cnnlstm._fast.plan import folded_copy, leaves, plan_for

pytestmark = pytest.mark.skipif(not winograd.available(), reason="numba is not installed")


def _conv(ci: int, co: int, bias: bool = True, seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(ci, co, 3, padding=1, bias=bias)


def _reference(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """The block in float64: relu(max_pool2d(conv(x), 2))."""
    b = None if conv.bias is None else conv.bias.double()
    y = nn.functional.conv2d(x.double(), conv.weight.double(), b, padding=1)
    return torch.relu(nn.functional.max_pool2d(y, 2))


@pytest.mark.parametrize(
    ("size", "co", "bias"),
    [((8, 8), 32, True), ((14, 14), 32, True), ((7, 9), 48, False), ((2, 2), 32, True), ((3, 5), 32, True)],
)
def test_a_block_equals_the_float64_chain(size, co, bias):
    conv = _conv(32, co, bias)
    x = torch.randn(3, 32, *size, generator=torch.Generator().manual_seed(1))
    got = winograd.run([winograd.WinogradBlock(conv.weight, conv.bias)], x)
    ref = _reference(x, conv)
    assert got.shape == ref.shape == (3, co, size[0] // 2, size[1] // 2)
    # float32 rounding in another order: up to 1.1e-5 seen, the direct float32 convolution ~1e-6
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=5e-5)


def test_a_block_run_a_frame_at_a_time_equals_it_run_whole(monkeypatch):
    conv = _conv(32, 48)
    x = torch.randn(3, 32, 10, 14, generator=torch.Generator().manual_seed(3))
    block = winograd.WinogradBlock(conv.weight, conv.bias)
    monkeypatch.setattr(winograd, "STEP_BYTES", None)
    whole = winograd.run([block], x)
    monkeypatch.setattr(winograd, "STEP_BYTES", 1)  # one frame per call of the kernels
    torch.testing.assert_close(winograd.run([block], x), whole, rtol=0, atol=0)
    torch.testing.assert_close(whole.double(), _reference(x, conv), rtol=0, atol=5e-5)


def test_the_products_by_bmm_equal_those_by_the_grouped_convolution(monkeypatch):
    """torch.bmm's products, laid out (36, tiles, Co), read by the same output kernel with other strides, with a
    last step shorter than the others (3 frames in steps of 2)."""
    conv = _conv(32, 32)
    x = torch.randn(3, 32, 8, 8, generator=torch.Generator().manual_seed(5))
    monkeypatch.setattr(winograd, "STEP_BYTES", 2 * 2 * 2 * 36 * 64 * 4)  # 2 frames a step: 2x2 tiles each
    block = winograd.WinogradBlock(conv.weight, conv.bias)
    got = {}
    for gemm in winograd.GEMMS:
        monkeypatch.setattr(winograd, "GEMM", gemm)
        got[gemm] = winograd.run([block], x)
    assert not block.chosen  # nothing timed: the way was given
    torch.testing.assert_close(got["bmm"], got["conv"], rtol=0, atol=1e-5)
    torch.testing.assert_close(got["bmm"].double(), _reference(x, conv), rtol=0, atol=5e-5)


def test_auto_keeps_the_faster_way_for_each_step_shape(monkeypatch):
    conv = _conv(32, 32)
    monkeypatch.setattr(winograd, "STEP_BYTES", 2 * 2 * 2 * 36 * 64 * 4)
    monkeypatch.setattr(winograd, "GEMM", "auto")
    block = winograd.WinogradBlock(conv.weight, conv.bias)
    answers, timed = [], []

    def best(ways):  # what the machine's timings would find: each way runs, the answer is given
        timed.append(sorted(ways))
        for f in ways.values():
            f()
        return answers.pop(0)

    monkeypatch.setattr(winograd, "_best", best)
    answers += ["bmm", "bmm"]  # bmm's GEMMs alone faster, then its whole steps
    x = torch.randn(3, 32, 8, 8, generator=torch.Generator().manual_seed(6))
    got = winograd.run([block], x)
    assert len(timed) == 2 and block.chosen == {(2, 2, 2, 8, 8): "bmm"}  # timed once, on the first step
    torch.testing.assert_close(got.double(), _reference(x, conv), rtol=0, atol=5e-5)
    winograd.run([block], x)
    assert len(timed) == 2  # kept: not timed again
    answers += ["conv"]  # the GEMMs alone: conv faster, no whole steps timed
    y = torch.randn(1, 32, 8, 8, generator=torch.Generator().manual_seed(7))
    got = winograd.run([block], y)  # another step shape: timed afresh
    assert len(timed) == 3 and block.chosen[(1, 2, 2, 8, 8)] == "conv"
    assert timed == [["bmm", "conv"]] * 3
    torch.testing.assert_close(got.double(), _reference(y, conv), rtol=0, atol=5e-5)


def test_the_timing_keeps_the_fastest_way():
    ran = []
    ways = {"slow": lambda: ran.append("slow") or time.sleep(0.01), "fast": lambda: ran.append("fast")}
    assert winograd._best(ways) == "fast"
    assert ran.count("slow") == ran.count("fast") == 1 + winograd.TRIALS  # each once untimed, then TRIALS timed


def test_the_gemm_setting_comes_from_the_environment():
    assert winograd.gemm_setting({}) == "auto"
    assert winograd.gemm_setting({"CNNLSTM_WINOGRAD_GEMM": "bmm"}) == "bmm"
    with pytest.raises(ValueError, match="CNNLSTM_WINOGRAD_GEMM='fast': use one of auto, conv, bmm"):
        winograd.gemm_setting({"CNNLSTM_WINOGRAD_GEMM": "fast"})


def test_blocks_in_a_row_equal_the_float64_chain():
    convs = [_conv(32, 32, seed=1), _conv(32, 48, seed=2)]
    x = torch.randn(2, 32, 14, 14, generator=torch.Generator().manual_seed(2))
    got = winograd.run([winograd.WinogradBlock(c.weight, c.bias) for c in convs], x)
    ref = _reference(_reference(x, convs[0]).float(), convs[1])
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=5e-5)


def test_a_nan_reaches_every_output_the_plain_chain_gives_nan():
    """A NaN spreads over the whole 6x6 tiles it is in (wider than a 3x3 convolution spreads it): no output the
    plain chain gives NaN comes out a number."""
    conv = _conv(32, 32)
    x = torch.randn(1, 32, 8, 8)
    x[0, 3, 5, 2] = float("nan")
    got = winograd.run([winograd.WinogradBlock(conv.weight, conv.bias)], x)
    ref = _reference(x, conv)
    assert ref.isnan().any() and got[ref.isnan()].isnan().all()
    far = ~got.isnan()
    torch.testing.assert_close(got[far].double(), ref[far], rtol=0, atol=5e-5)


def _pool(**kw) -> tuple:
    m = nn.MaxPool2d(**{"kernel_size": 2, **kw})
    return (m.kernel_size, m.stride, m.padding, 1, m.ceil_mode)


@pytest.mark.parametrize(
    ("conv", "pool", "takes"),
    [
        (dict(), dict(), True),
        (dict(in_channels=16), dict(), False),  # too few input channels to gain
        (dict(stride=2), dict(), False),
        (dict(padding=0), dict(), False),
        (dict(dilation=2, padding=2), dict(), False),
        (dict(groups=2), dict(), False),
        (dict(kernel_size=5, padding=2), dict(), False),
        (dict(), dict(ceil_mode=True), False),
        (dict(), dict(kernel_size=3, stride=2), False),
        (dict(), dict(padding=1), False),
    ],
)
def test_only_3x3_stride_1_convolutions_before_a_2x2_pool_are_taken(conv, pool, takes):
    m = nn.Conv2d(**{"in_channels": 32, "out_channels": 32, "kernel_size": 3, "padding": 1, **conv})
    assert winograd.eligible(m, _pool(**pool)) is takes


def _chain(tail: list[nn.Module] | None = None) -> nn.Sequential:
    torch.manual_seed(3)
    layers = [nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2)]
    layers += [nn.Conv2d(32, 48, 3, padding=1, bias=False), nn.BatchNorm2d(48), nn.ReLU(), nn.MaxPool2d(2)]
    layers += [nn.Conv2d(48, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    layers += tail if tail is not None else [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    chain = nn.Sequential(*layers)
    for m in chain.modules():
        if isinstance(m, nn.BatchNorm2d):  # statistics of a trained model, not the identity
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return chain.eval()


@pytest.mark.parametrize("tail", ["gap", "strided-conv"])
def test_the_inference_chain_equals_the_plain_module(tail, monkeypatch):
    extra = [nn.Conv2d(32, 16, 3, stride=2), nn.ReLU(), nn.Flatten()] if tail == "strided-conv" else None
    chain = _chain(extra)
    ran = []
    call = winograd.run
    monkeypatch.setattr(winograd, "run", lambda blocks, x: ran.append(len(blocks)) or call(blocks, x))
    x = torch.randn(5, 3, 30, 28, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got = plan_for(chain, x)(x)
        ref = chain(x)
    assert ran == [2]  # blocks 2 and 3 ran as Winograd's, the first (3 input channels) on oneDNN's
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-4)


def test_switched_off_the_chain_runs_the_direct_convolutions(monkeypatch):
    chain = _chain()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        on = plan_for(chain, x)(x)
        monkeypatch.setattr(winograd, "ENABLED", False)
        monkeypatch.setattr(winograd, "run", lambda *a: pytest.fail("Winograd ran while switched off"))
        off = plan_for(chain, x)(x)
    torch.testing.assert_close(on, off, rtol=0, atol=1e-4)


def test_a_map_too_small_for_the_pools_is_left_to_the_direct_ops(monkeypatch):
    chain = _chain([nn.Flatten()])
    monkeypatch.setattr(winograd, "run", lambda *a: pytest.fail("Winograd ran on a map too small for its pools"))
    x = torch.randn(2, 3, 6, 6)  # 3x3 after the first block: 1x1 after the second, too small for the third pool
    with torch.no_grad(), pytest.raises(RuntimeError):
        chain(x)
    with torch.no_grad(), pytest.raises(RuntimeError):  # an error as the plain module's, not an empty output
        plan_for(chain, x)(x)


def test_a_kernel_that_fails_falls_back_with_a_warning(monkeypatch):
    chain = _chain()
    x = torch.randn(2, 3, 16, 16)
    monkeypatch.setattr(winograd, "_failed", [])

    def broken(self, x, h, w):
        raise RuntimeError("LLVM said no")

    monkeypatch.setattr(winograd.WinogradBlock, "__call__", broken)
    prefix = OneDNNPrefix(leaves(folded_copy(chain)))  # BatchNorm folded into the convolutions, as at inference
    assert prefix.winograd  # planned while the kernels were available
    with torch.no_grad(), pytest.warns(UserWarning, match="LLVM said no"):
        got = prefix(x)
    assert not winograd.available()
    torch.testing.assert_close(got, chain(x), rtol=0, atol=1e-4)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_runs_the_direct_convolutions_and_lives(in_forked_child):
    """GNU OpenMP (numba's pool) kills a forked child at its first parallel call; the child falls back."""
    chain = _chain()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = plan_for(chain, x)(x)  # the kernels, in this process

    def child() -> bool:  # the same call in the child
        torch.set_num_threads(1)  # as DataLoader's workers: PyTorch's own OpenMP pool hangs in a forked child
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            return not winograd.available() and torch.allclose(plan_for(chain, x)(x), expected, rtol=0, atol=1e-4)

    status, verdict = in_forked_child(child)
    assert status == 0 and verdict == b"1", (status, verdict)
    assert winograd.available()  # the parent keeps them


def test_the_kernels_use_pytorchs_thread_count_and_leave_numbas_setting(monkeypatch):
    import numba

    seen = []
    block = winograd.WinogradBlock(_conv(32, 32).weight, None)
    monkeypatch.setattr(
        winograd.WinogradBlock, "__call__", lambda self, x, h, w: seen.append(numba.get_num_threads()) or x
    )
    before, threads = numba.get_num_threads(), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        winograd.run([block], torch.zeros(1, 32, 4, 4))
    finally:
        torch.set_num_threads(threads)
    assert seen == [1] and numba.get_num_threads() == before
