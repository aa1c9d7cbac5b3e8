"""The series CNNs fcn, resnet1d, inception1d (and conv1d) and their masked BatchNorm: shapes over random lengths and
channel counts, padded steps that change nothing (in eval and in training), options and messages."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cnnlstm import BACKBONES, ConfigError, ShapeError, build_backbone, infer
from cnnlstm.backbones import FCN, Inception1d, ResNet1d
from cnnlstm.backbones._masked import MaskedBatchNorm1d

pytestmark = pytest.mark.usefixtures("one_thread")
SETTINGS = settings(max_examples=12, deadline=None)

# tiny versions of each: the same structure, a few channels (conv1d, the library's own, masks the same way)
TINY = {
    "fcn": ("fcn", {"channels": (4, 8, 4), "kernel_sizes": (8, 5, 3)}),
    "fcn-se": ("fcn", {"channels": (4, 8, 4), "kernel_sizes": (8, 5, 3), "se": True, "se_reduction": 2}),
    "resnet1d": ("resnet1d", {"channels": (4, 6, 6), "kernel_sizes": (8, 5, 3)}),
    "inception1d": ("inception1d", {"depth": 6, "filters": 2, "bottleneck": 2, "kernel_sizes": (10, 6, 2)}),
    "conv1d": ("conv1d", {"channels": (4, 6), "kernel_size": 3, "dilated": True}),
    "conv1d-causal": ("conv1d", {"channels": (4, 6), "kernel_size": 2, "causal": True}),
}
OUT = {"fcn": 4, "fcn-se": 4, "resnet1d": 6, "inception1d": 8, "conv1d": 6, "conv1d-causal": 6}


def _net(name: str, features: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    backbone, options = TINY[name]
    net = build_backbone(backbone, features, **options)
    with torch.no_grad():  # running statistics and affine parameters that are not the identity
        for m in net.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return net.eval()


def _padded(x: torch.Tensor, lengths: list[int], garbage: float = float("nan")) -> torch.Tensor:
    """``x`` with every step past each length replaced by ``garbage``."""
    x = x.clone()
    for i, n in enumerate(lengths):
        x[i, n:] = garbage
    return x


def test_registered_by_name():
    assert {"fcn", "resnet1d", "inception1d"} <= set(BACKBONES)
    assert BACKBONES.get("fcn") is FCN and BACKBONES.get("resnet1d") is ResNet1d
    assert BACKBONES.get("inception1d") is Inception1d


@pytest.mark.parametrize("name", list(TINY))
@SETTINGS
@given(data=st.data(), n=st.integers(1, 3), t=st.integers(1, 12), f=st.integers(1, 4))
def test_shapes_over_random_lengths_and_channels(name, data, n, t, f):
    net = _net(name, f)
    lengths = data.draw(st.lists(st.integers(1, t), min_size=n, max_size=n))
    with torch.no_grad():
        y = net(torch.randn(n, t, f), torch.tensor(lengths))
    assert y.shape == (n, t, OUT[name]) and net.out_channels == OUT[name]
    assert torch.isfinite(y).all()
    assert infer(net, (n, None, f)) == (n, None, OUT[name])


@pytest.mark.parametrize("name", list(TINY))
@SETTINGS
@given(data=st.data(), t=st.integers(2, 14), f=st.integers(1, 3))
def test_padded_steps_never_change_the_output(name, data, t, f):
    """Each series alone gives what it gives in a batch padded with NaN past its length, and its padded steps are
    zero."""
    net = _net(name, f)
    lengths = data.draw(st.lists(st.integers(1, t), min_size=2, max_size=3))
    x = torch.randn(len(lengths), t, f)
    with torch.no_grad():
        batched = net(_padded(x, lengths), torch.tensor(lengths))
        for i, n in enumerate(lengths):
            alone = net(x[i : i + 1, :n])
            torch.testing.assert_close(batched[i, :n], alone[0], atol=1e-5, rtol=1e-4)
            assert (batched[i, n:] == 0).all()


@pytest.mark.parametrize("name", list(TINY))
def test_training_statistics_ignore_padding(name):
    """In training, BatchNorm's statistics count valid steps only: padding a batch further (with garbage) changes
    neither its outputs, nor its gradients, nor the running statistics it leaves."""
    lengths = torch.tensor([5, 9, 7])
    x = torch.randn(3, 9, 2)
    outs, grads, stats = [], [], []
    for extra in (0, 6):
        net = _net(name, 2).train()
        xp = torch.cat([_padded(x, lengths.tolist(), 1e3), torch.full((3, extra, 2), -1e3)], 1).requires_grad_()
        y = net(xp, lengths)
        (y[:, :9] * torch.linspace(-1, 1, 9)[:, None]).sum().backward()
        outs.append(y[:, :9].detach())
        grads.append(xp.grad[:, :9])
        stats.append(torch.cat([m.running_var for m in net.modules() if isinstance(m, nn.BatchNorm1d)]))
        assert torch.isfinite(xp.grad).all() and (xp.grad[0, 5:] == 0).all()
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(stats[0], stats[1])


def test_masked_batchnorm_is_batchnorm_over_the_valid_steps():
    torch.manual_seed(0)
    bn, ref = MaskedBatchNorm1d(3, momentum=0.3), nn.BatchNorm1d(3, momentum=0.3)
    x = torch.randn(2, 3, 6) * 2 + 1
    valid = torch.tensor([[True] * 4 + [False] * 2, [True] * 6]).unsqueeze(1)  # (N, 1, T)
    y = bn(x, valid)
    steps = torch.cat([x[0, :, :4], x[1]], dim=1).T  # (10 valid steps, C)
    torch.testing.assert_close(y[0, :, :4], ref(steps).T[:, :4])
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    assert int(bn.num_batches_tracked) == 1
    torch.testing.assert_close(bn(x), ref.__class__.forward(bn, x))  # no mask: BatchNorm1d itself
    bn.eval()
    frozen = nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias)
    torch.testing.assert_close(bn(x, valid), frozen)  # running statistics: the mask changes nothing
    assert isinstance(bn, nn.BatchNorm1d) and set(bn.state_dict()) == set(ref.state_dict())


def test_the_papers_sizes_by_default():
    fcn = FCN(1)
    assert [b.conv.out_channels for b in fcn.blocks] == [128, 256, 128]
    assert [b.conv.kernel_size[0] for b in fcn.blocks] == [8, 5, 3] and len(fcn.se) == 0
    assert len(FCN(12, se=True).se) == 2  # MLSTM-FCN: after the first two blocks
    assert FCN(12, se=True).se[0].gate[0].out_features == 128 // 16
    res = ResNet1d(1)
    assert [b.convs[0].conv.out_channels for b in res.blocks] == [64, 128, 128]
    assert [type(b.project).__name__ for b in res.blocks] == ["Conv1d", "Conv1d", "Identity"]
    inc = Inception1d(3)
    assert len(inc.blocks) == 6 and len(inc.shortcuts) == 2 and inc.out_channels == 128
    assert [c.kernel_size[0] for c in inc.blocks[0].convs] == [39, 19, 9]
    assert isinstance(Inception1d(1).blocks[0].bottleneck, nn.Identity)  # none for one channel, as InceptionTime
    assert isinstance(Inception1d(1).blocks[1].bottleneck, nn.Conv1d)


def test_inceptions_max_over_three_steps_is_max_pool1d():
    from cnnlstm.backbones.inception import _max3

    x = torch.randn(2, 3, 7)
    torch.testing.assert_close(_max3(x), nn.functional.max_pool1d(x, 3, stride=1, padding=1))
    torch.testing.assert_close(_max3(x[..., :1]), x[..., :1])  # one step: its own max


def test_inception_without_residual_or_bottleneck():
    net = Inception1d(2, depth=4, filters=2, bottleneck=0, kernel_sizes=(5, 3), residual=False)
    assert len(net.shortcuts) == 0 and net.out_channels == 6
    assert net.eval()(torch.randn(2, 7, 2)).shape == (2, 7, 6)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: FCN(1, channels=(8, 8), kernel_sizes=(3,)), r"one kernel size per block: channels=\(8, 8\)"),
        (lambda: FCN(1, channels=()), "fcn backbone needs at least one of channels"),
        (lambda: ResNet1d(1, kernel_sizes=(3, 0)), r"resnet1d backbone kernel_sizes must be positive ints"),
        (lambda: FCN(1, se=True, se_reduction=0), "reduction must be a positive int, got 0"),
        (lambda: Inception1d(1, depth=0), "inception1d backbone depth must be an int >= 1, got 0"),
        (lambda: Inception1d(1, kernel_sizes=()), "inception1d backbone kernel_sizes must be positive ints"),
        (lambda: build_backbone("fcn", 1, pool=2), r"backbone 'fcn' does not take these options \['pool'\]"),
    ],
)
def test_bad_options_say_which(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


@pytest.mark.parametrize("name", ["fcn", "resnet1d", "inception1d"])
def test_a_series_with_its_features_first_is_named(name):
    net = build_backbone(name, 3)
    wants = rf"{name} backbone wants series \(N, T, F=3\), got \(2, 3, 10\): the features are on axis 1, "
    with pytest.raises(ShapeError, match=wants + r"pass x.transpose\(1, 2\) = \(2, 10, 3\)"):
        net(torch.randn(2, 3, 10))
    with pytest.raises(ShapeError, match="build it with in_features=4"):
        net(torch.randn(2, 10, 4))
    with pytest.raises(ShapeError, match=rf"{name} backbone: every length must be in 1..T=10"):
        net(torch.randn(2, 10, 3), torch.tensor([3, 11]))
