"""Backbones: the built-in small 2-D CNN and conv1d, custom modules, torchvision/timm adapters, local weights."""

from __future__ import annotations

import pickle
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn

import cnnlstm
from cnnlstm import (
    BACKBONES,
    CNNLSTM,
    CnnlstmError,
    ConfigError,
    Conv1dBackbone,
    MissingDependencyError,
    ShapeError,
    SmallCNN,
    TimeDistributed,
    build_backbone,
    infer,
)
from cnnlstm.backbones import load_weights

SETTINGS = settings(max_examples=25, deadline=None)


# ----------------------------------------------------------------------------- the built-in small CNN


def test_registry_has_the_builtins():
    assert "small" in BACKBONES
    assert "conv1d" in BACKBONES
    assert BACKBONES.get("small") is SmallCNN
    assert BACKBONES.get("conv1d") is Conv1dBackbone


@pytest.mark.parametrize(("channels", "hw"), [((8,), 16), ((8, 16), 8), ((4, 8, 16), 4)])
def test_small_cnn_halves_per_block(channels, hw):
    torch.manual_seed(0)
    cnn = SmallCNN(3, channels=channels)
    y = cnn(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, channels[-1], hw, hw)
    assert cnn.out_channels == channels[-1]
    assert cnn.in_channels == 3
    assert infer(cnn, (2, 3, 32, 32)) == y.shape
    y.sum().backward()
    assert cnn.block1.conv.weight.grad.abs().sum() > 0


def test_small_cnn_defaults_and_kernel_size():
    cnn = SmallCNN()
    assert cnn.out_channels == 256
    assert infer(cnn, (1, 3, 112, 112)) == torch.Size([1, 256, 7, 7])
    assert infer(SmallCNN(1, channels=(4,), kernel_size=5), (2, 1, 10, 10)) == torch.Size([2, 4, 5, 5])
    assert SmallCNN(3, channels=(4,), kernel_size=5).block1.conv.kernel_size == (5, 5)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: SmallCNN(3, kernel_size=4), "odd kernel_size, got 4"),
        (lambda: SmallCNN(3, channels=()), "at least one block"),
        (lambda: Conv1dBackbone(3, channels=()), "at least one layer"),
        (lambda: Conv1dBackbone(3, kernel_size=4), "odd kernel_size unless causal=True"),
        (lambda: build_backbone("small", 3, depth=5), r"does not take these options \['depth'\]"),
        (lambda: build_backbone("nope", 3), "unknown backbone 'nope': expected one of small, conv1d"),
        (lambda: build_backbone(5, 3), "must be a name or an nn.Module, got int"),
    ],
)
def test_bad_backbone_options_raise_config_error(factory, match):
    with pytest.raises(ConfigError, match=match):
        factory()


# ----------------------------------------------------------------------------- conv1d for series


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dilated", [False, True])
def test_conv1d_keeps_time(causal, dilated):
    torch.manual_seed(0)
    net = Conv1dBackbone(6, channels=(8, 12), kernel_size=3, dilated=dilated, causal=causal)
    y = net(torch.randn(2, 11, 6))
    assert y.shape == (2, 11, 12)
    assert net.out_channels == 12
    assert infer(net, (2, None, 6)) == (2, None, 12)


def test_conv1d_causal_step_sees_only_the_past():
    torch.manual_seed(0)
    net = Conv1dBackbone(3, channels=(4, 4), kernel_size=3, dilated=True, causal=True).eval()
    x = torch.randn(1, 12, 3)
    x2 = x.clone()
    x2[:, 7:] += 5.0  # change the future from step 7 on
    y, y2 = net(x), net(x2)
    torch.testing.assert_close(y[:, :7], y2[:, :7])
    assert not torch.allclose(y[:, 7:], y2[:, 7:])


def test_conv1d_non_causal_sees_the_future():
    torch.manual_seed(0)
    net = Conv1dBackbone(3, channels=(4,), kernel_size=3).eval()
    x = torch.randn(1, 12, 3)
    x2 = x.clone()
    x2[:, 7] += 5.0
    assert not torch.allclose(net(x)[:, 6], net(x2)[:, 6])


def test_conv1d_even_kernel_when_causal():
    assert Conv1dBackbone(3, channels=(4,), kernel_size=4, causal=True)(torch.randn(2, 9, 3)).shape == (2, 9, 4)


@pytest.mark.parametrize("causal", [False, True])
def test_conv1d_pool_shortens_time_and_padding_changes_nothing(causal):
    assert Conv1dBackbone(3, channels=(4,), pool=4)(torch.randn(2, 10, 3)).shape == (2, 3, 4)  # ceil(10 / 4)
    with pytest.raises(ConfigError, match="pool must be a positive int"):
        Conv1dBackbone(3, pool=0)
    torch.manual_seed(0)
    m = CNNLSTM(
        layout="NTF",
        input_shape=(None, 2),
        backbone_options={"channels": (4, 4), "pool": 4, "causal": causal},
        hidden_size=8,
        num_classes=3,
        head="mean",
    ).eval()
    short = torch.randn(1, 9, 2)  # 9 steps: the last pooling window is part series, part padding
    padded = torch.cat([torch.cat([short, torch.zeros(1, 7, 2)], 1), torch.randn(1, 16, 2)])  # (2, 16, 2)
    with torch.no_grad():
        alone, batched = m(short), m(padded, torch.tensor([9, 16]))
    torch.testing.assert_close(batched[0], alone[0])


def test_pooling_backbones_refuse_per_step_heads_and_streaming():
    with pytest.raises(ConfigError, match="pools time by 4"):
        CNNLSTM(layout="NTF", input_shape=(None, 2), backbone_options={"pool": 4}, head="frames")
    m = CNNLSTM(layout="NTF", input_shape=(None, 2), backbone_options={"causal": True, "pool": 4})
    with pytest.raises(ConfigError, match="pools time by 4"):
        m.stream()


def test_time_stride_is_a_backbone_property():
    from cnnlstm.backbones import time_stride

    assert time_stride(Conv1dBackbone(3, channels=(4,), pool=4)) == 4
    assert time_stride(Conv1dBackbone(3, channels=(4,))) == 1
    assert time_stride(nn.Conv1d(3, 4, 1)) == 1  # a module that declares none keeps T

    class Strided(nn.Module):  # any backbone that declares a stride is treated like conv1d's pool
        time_stride = 2

        def forward(self, x):
            return x[:, ::2]

    with pytest.raises(ConfigError, match="pools time by 2"):
        CNNLSTM(Strided(), layout="NTF", input_shape=(None, 2), head="frames")


def test_conv1d_dilations():
    net = Conv1dBackbone(3, channels=(4, 4, 4), kernel_size=3, dilated=True)
    assert [layer.conv.dilation for layer in net.layers] == [(1,), (2,), (4,)]


@pytest.mark.parametrize(
    ("net", "x"),
    [
        (SmallCNN(3, channels=(4,)), torch.zeros(2, 5, 16, 16)),
        (Conv1dBackbone(4, channels=(8,)), torch.zeros(2, 10, 5)),
        (Conv1dBackbone(4, channels=(8,)), torch.zeros(10, 4)),
    ],
)
def test_builtin_backbones_called_directly_raise_shape_error(net, x):
    with pytest.raises(ShapeError):
        net(x)


# ----------------------------------------------------------------------------- any nn.Module


def test_custom_module_backbone():
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(3, 12, 3, stride=2, padding=1), nn.ReLU())
    assert build_backbone(trunk, 3) is trunk
    model = CNNLSTM(trunk, input_shape=(4, 3, 16, 16), hidden_size=8, num_classes=3)
    assert model.config.backbone == "custom"
    assert model.feature_shape == (4, 12, 8, 8)
    assert model.rnn.input_size == 12
    y = model(torch.randn(2, 4, 3, 16, 16))
    assert y.shape == (2, 3)
    y.sum().backward()
    assert trunk[0].weight.grad.abs().sum() > 0


def test_custom_series_backbone():
    model = CNNLSTM(nn.Linear(5, 7), input_shape=(None, 5), layout="NTF", hidden_size=8, num_classes=2)
    assert model.rnn.input_size == 7
    assert model(torch.randn(3, 6, 5)).shape == (3, 2)


class _Two(nn.Module):
    def forward(self, x):
        return x, x


def test_custom_image_backbone_returning_a_tuple_is_a_config_error():
    with pytest.raises(ConfigError, match="must return one tensor"):
        CNNLSTM(_Two(), input_shape=(3, 16, 16), layout="NCHW")


def test_custom_clip_backbone_returning_a_tuple_is_a_config_error():
    with pytest.raises(ConfigError, match="must return one tensor"):
        CNNLSTM(_Two(), input_shape=(4, 3, 16, 16))


def test_custom_backbone_that_cannot_take_input_shape():
    with pytest.raises(ShapeError, match=r"backbone 'custom' cannot take input_shape \(4, 3, 16, 16\).*in_channels=3"):
        CNNLSTM(nn.Conv2d(1, 8, 3), input_shape=(4, 3, 16, 16))


def test_register_backbone(monkeypatch):
    monkeypatch.setattr(BACKBONES, "_table", dict(BACKBONES._table))

    @cnnlstm.register_backbone("tiny")
    class Tiny(nn.Sequential):
        def __init__(self, in_channels: int, width: int = 4):
            super().__init__(nn.Conv2d(in_channels, width, 3, padding=1), nn.AdaptiveAvgPool2d(2))

    assert "tiny" in BACKBONES
    model = CNNLSTM("tiny", input_shape=(3, 1, 8, 8), hidden_size=4, backbone_options={"width": 6})
    assert model.rnn.input_size == 6
    with pytest.raises(ConfigError, match="'tiny' is registered already"):
        cnnlstm.register_backbone("tiny")(Tiny)


# ----------------------------------------------------------------------------- local weights

_UNPICKLED = []


def _mark():
    _UNPICKLED.append(True)
    return {}


class _Evil:
    def __reduce__(self):
        return (_mark, ())


@pytest.mark.parametrize("how", ["safetensors", "torch", "wrapped"])
def test_load_weights_from_a_local_file(tmp_path, how):
    torch.manual_seed(0)
    src = SmallCNN(3, channels=(4, 8))
    with torch.no_grad():
        src.block1.bn.running_mean.uniform_(-1, 1)
    path = tmp_path / ("w.safetensors" if how == "safetensors" else "w.pt")
    if how == "safetensors":
        save_file(src.state_dict(), str(path))
    elif how == "torch":
        torch.save(src.state_dict(), path)
    else:
        torch.save({"state_dict": src.state_dict(), "epoch": 3}, path)
    dst = SmallCNN(3, channels=(4, 8))
    load_weights(dst, path)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_load_weights_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist .*local path only"):
        load_weights(SmallCNN(3), tmp_path / "nope.safetensors")


def test_load_weights_runs_no_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_weights(SmallCNN(3), path)
    assert _UNPICKLED == []


# ----------------------------------------------------------------------------- torchvision / timm adapters (faked)


class FakeResNet(nn.Module):
    """A tiny ResNet-shaped model: conv1, bn1, relu, layer1, avgpool, fc."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.layer1(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.avgpool(x).flatten(1))


class FakeVGG(nn.Module):
    """A tiny VGG-shaped model: .features, .avgpool, .classifier."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Linear(24, num_classes)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


class NoClassifierNames(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3)
        self.b = nn.Linear(4, 2)


@pytest.fixture
def fake_torchvision(monkeypatch):
    calls = []

    def get_model(name, weights=None, **kwargs):
        calls.append((name, weights, kwargs))
        factory = {"resnet": FakeResNet, "vgg": FakeVGG, "odd": NoClassifierNames}[name]
        return factory(**kwargs)

    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    models.get_model = get_model
    tv.models = models
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    return calls


def test_torchvision_resnet_like_strips_classifier(fake_torchvision):
    trunk = build_backbone("torchvision:resnet", 3)
    names = [n for n, _ in trunk.named_children()]
    assert names == ["conv1", "bn1", "relu", "layer1"]
    assert not any(isinstance(m, nn.Linear) for m in trunk.modules())
    assert infer(trunk, (2, 3, 32, 32)) == torch.Size([2, 16, 16, 16])
    assert fake_torchvision == [("resnet", None, {})]  # nothing downloads


def test_torchvision_features_classifier_keeps_features(fake_torchvision):
    trunk = build_backbone("torchvision:vgg", 3)
    assert isinstance(trunk, nn.Sequential)
    assert not any(isinstance(m, nn.Linear) for m in trunk.modules())
    out = infer(trunk, (2, 3, 16, 16))
    assert len(out) == 4
    assert out == torch.Size([2, 6, 8, 8])


def test_torchvision_options_pass_through(fake_torchvision):
    build_backbone("torchvision:resnet", 3, num_classes=7)
    assert fake_torchvision[-1] == ("resnet", None, {"num_classes": 7})


def test_torchvision_without_a_classifier_boundary(fake_torchvision):
    with pytest.raises(ConfigError, match="torchvision:odd: cannot find where its classifier starts"):
        build_backbone("torchvision:odd", 3)


def test_torchvision_backbone_in_cnnlstm_with_local_weights(fake_torchvision, tmp_path):
    torch.manual_seed(0)
    src = FakeResNet()
    with torch.no_grad():
        src.bn1.running_mean.uniform_(-1, 1)
    path = tmp_path / "resnet.safetensors"
    save_file(src.state_dict(), str(path))
    model = CNNLSTM(
        "torchvision:resnet",
        input_shape=(3, 3, 32, 32),
        hidden_size=8,
        num_classes=4,
        backbone_options={"weights": str(path)},
    )
    assert model.bn == "frozen"
    assert model.config.backbone == "torchvision:resnet"
    assert "weights" not in model.config.backbone_options
    assert model.rnn.input_size == 16
    trunk = model.backbone.module
    assert torch.equal(trunk.conv1.weight, src.conv1.weight)
    assert torch.equal(trunk.bn1.running_mean, src.bn1.running_mean)
    model.train()
    before = trunk.bn1.running_mean.clone()
    y = model(torch.randn(2, 3, 3, 32, 32))
    assert y.shape == (2, 4)
    assert torch.equal(trunk.bn1.running_mean, before)
    assert fake_torchvision[-1][1] is None


class FakeTimmNet(nn.Module):
    def __init__(self, in_chans: int = 3, num_classes: int = 1000):
        super().__init__()
        self.stem = nn.Conv2d(in_chans, 10, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(10)
        self.head = nn.Linear(10, num_classes)
        self.reset_calls = []

    def forward_features(self, x):
        return torch.relu(self.norm(self.stem(x)))  # (B, 10, H/2, W/2)

    def reset_classifier(self, num_classes, global_pool=None):
        self.reset_calls.append((num_classes, global_pool))
        self.head = nn.Identity()

    def forward(self, x):
        return self.head(self.forward_features(x).mean(dim=(-2, -1)))


@pytest.fixture
def fake_timm(monkeypatch):
    calls = []
    timm = types.ModuleType("timm")

    def create_model(name, pretrained=False, **kwargs):
        calls.append((name, pretrained, kwargs))
        return FakeTimmNet(**kwargs)

    timm.create_model = create_model
    monkeypatch.setitem(sys.modules, "timm", timm)
    return calls


def test_timm_adapter_keeps_last_feature_map(fake_timm):
    features = build_backbone("timm:fakenet", 1)
    assert fake_timm == [("fakenet", False, {"in_chans": 1})]
    net = features.model
    assert net.reset_calls == [(0, "")]
    assert isinstance(net.head, nn.Identity)
    assert infer(features, (2, 1, 16, 16)) == torch.Size([2, 10, 8, 8])


def test_timm_backbone_in_cnnlstm(fake_timm, tmp_path):
    torch.manual_seed(0)
    src = FakeTimmNet(in_chans=1)
    path = tmp_path / "net.pt"
    torch.save(src.state_dict(), path)
    model = CNNLSTM(
        "timm:fakenet", input_shape=(None, 1, 16, 16), hidden_size=8, num_classes=3, backbone_options={"weights": path}
    )
    assert fake_timm[-1][2]["in_chans"] == 1
    assert model.bn == "frozen"
    assert model.rnn.input_size == 10
    assert torch.equal(model.backbone.module.model.stem.weight, src.stem.weight)
    y = model(torch.randn(2, 5, 1, 16, 16))
    assert y.shape == (2, 3)


@pytest.mark.parametrize(("spec", "module"), [("torchvision:resnet18", "torchvision"), ("timm:resnet18", "timm")])
def test_adapters_without_the_package_name_the_extra(monkeypatch, spec, module):
    for name in (module, f"{module}.models"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails even if the package is installed
    with pytest.raises(MissingDependencyError, match=rf"'{module}.*pip install 'cnnlstm\[vision\]'") as info:
        build_backbone(spec, 3)
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    vision = re.search(r"^vision = \[(.*)\]$", pyproject, re.M)
    assert vision and f'"{module}' in vision.group(1)  # the extra named really installs the package
    assert isinstance(info.value, ImportError)
    assert isinstance(info.value, CnnlstmError)
    with pytest.raises(MissingDependencyError, match=spec):
        CNNLSTM(spec, input_shape=(4, 3, 32, 32))


# ----------------------------------------------------------------------------- TimeDistributed(backbone) fuzz


@st.composite
def wrong_frames(draw):
    """Wrong inputs for TimeDistributed(SmallCNN(3)): not (N, T, 3, H, W)."""
    if draw(st.booleans()):
        rank = draw(st.sampled_from([1, 2, 3, 4, 6, 7]))
        shape = tuple(draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank)))
    else:
        c = draw(st.integers(1, 6).filter(lambda c: c != 3))
        shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), c, draw(st.integers(2, 8)), draw(st.integers(2, 8)))
    return shape


_TD = TimeDistributed(SmallCNN(3, channels=(4,)))


@SETTINGS
@given(wrong_frames())
def test_fuzz_time_distributed_backbone_raises_shape_error(shape):
    with pytest.raises(ShapeError):
        _TD(torch.zeros(shape))


def test_time_distributed_four_d_input_raises_shape_error():
    with pytest.raises(ShapeError):
        _TD(torch.zeros(1, 3, 16, 16))
