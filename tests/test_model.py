"""CNNLSTM: every bridge x head x rnn, layouts, lengths, config, save/load, BatchNorm policy, errors."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn

import cnnlstm
from cnnlstm import CNNLSTM, CNNLSTMConfig, ConfigError, ShapeError

SETTINGS = settings(max_examples=25, deadline=None)
SMALL = {"channels": (8, 16)}
CLIP_BRIDGES = ["gap", "gmp", "grid", "flatten", "attention"]
HEADS = ["last", "mean", "attention", "frames"]


def _model(**kw) -> CNNLSTM:
    opts = {"input_shape": (4, 3, 32, 32), "hidden_size": 8, "num_classes": 5, "backbone_options": dict(SMALL)}
    opts.update(kw)
    return CNNLSTM(**opts)


def _clip(n=2, t=4, c=3, h=32, w=32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, t, c, h, w, generator=g)


def _first_conv(model: CNNLSTM) -> nn.Conv2d:
    return next(m for m in model.backbone.modules() if isinstance(m, (nn.Conv2d, nn.Conv1d)))


def _first_bn(model: CNNLSTM) -> nn.modules.batchnorm._BatchNorm:
    return next(m for m in model.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


# ----------------------------------------------------------------------------- smoke: every combination


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("bridge", CLIP_BRIDGES)
def test_every_bridge_head_rnn_combination(bridge, head, rnn):
    torch.manual_seed(0)
    model = _model(bridge=bridge, head=head, rnn=rnn)
    x = _clip()
    y = model(x)
    assert y.shape == ((2, 4, 5) if head == "frames" else (2, 5))
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    grad = _first_conv(model).weight.grad
    assert grad is not None
    assert grad.abs().sum() > 0
    # the dry run agrees with the real run
    assert tuple(cnnlstm.infer(model, tuple(x.shape))) == tuple(y.shape)


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
@pytest.mark.parametrize("head", HEADS)
def test_bidirectional_two_layer_rnns(head, rnn):
    torch.manual_seed(0)
    model = _model(head=head, rnn=rnn, bidirectional=True, num_layers=2, dropout=0.1)
    assert model.rnn.out_features == 16
    y = model(_clip())
    assert y.shape == ((2, 4, 5) if head == "frames" else (2, 5))
    assert torch.isfinite(y).all()
    y.sum().backward()
    assert _first_conv(model).weight.grad.abs().sum() > 0


def test_rnn_input_size_is_inferred_per_bridge():
    assert _model(bridge="gap").rnn.input_size == 16
    assert _model(bridge="gmp").rnn.input_size == 16
    assert _model(bridge="attention").rnn.input_size == 16
    assert _model(bridge="grid").rnn.input_size == 16 * 4
    assert _model(bridge="grid", bridge_options={"k": 3}).rnn.input_size == 16 * 9
    assert _model(bridge="flatten").rnn.input_size == 16 * 8 * 8
    assert _model().feature_shape == (4, 16, 8, 8)


# ----------------------------------------------------------------------------- lengths


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lengths_match_the_unpadded_clip(head, bidirectional):
    torch.manual_seed(0)
    model = _model(input_shape=(None, 3, 16, 16), head=head, bidirectional=bidirectional).eval()
    x = _clip(t=5, h=16, w=16)
    y = model(x, lengths=torch.tensor([5, 3]))
    alone = model(x[1:2, :3])[0]
    if head == "frames":
        torch.testing.assert_close(y[1, :3], alone)
        assert torch.equal(y[1, 3:], torch.zeros_like(y[1, 3:]))
    else:
        torch.testing.assert_close(y[1], alone)


def test_bad_lengths_raise_shape_error():
    model = _model()
    with pytest.raises(ShapeError, match=r"lengths must be \(N,\) = \(2,\)"):
        model(_clip(), lengths=[4, 4, 4])
    with pytest.raises(ShapeError, match=r"1\.\.T=4"):
        model(_clip(), lengths=[4, 5])


# ----------------------------------------------------------------------------- layouts


def test_nthwc_layout_equals_permuted_ntchw():
    torch.manual_seed(0)
    a = _model().eval()
    b = _model(input_shape=(4, 32, 32, 3), layout="NTHWC").eval()
    b.load_state_dict(a.state_dict())
    x = _clip()
    torch.testing.assert_close(b(x.permute(0, 1, 3, 4, 2)), a(x))
    assert b.config.input_shape == (4, 32, 32, 3)


def test_ncthw_layout_equals_permuted_ntchw():
    torch.manual_seed(0)
    a = _model().eval()
    b = _model(input_shape=(3, 4, 32, 32), layout="NCTHW").eval()
    b.load_state_dict(a.state_dict())
    x = _clip()
    torch.testing.assert_close(b(x.transpose(1, 2)), a(x))


def test_image_layout_with_spatial_bridge():
    torch.manual_seed(0)
    model = _model(input_shape=(3, 16, 16), layout="NCHW")
    assert model.config.bridge == "spatial"
    assert model.rnn.input_size == 16
    y = model(torch.randn(2, 3, 16, 16))
    assert y.shape == (2, 5)
    y.sum().backward()
    assert _first_conv(model).weight.grad.abs().sum() > 0
    # the positions are the steps: 16x16 frames -> 4x4 maps -> 16 steps
    assert model.features(torch.randn(2, 3, 16, 16)).shape == (2, 16, 16)
    with pytest.raises(ShapeError, match="takes no lengths"):
        model(torch.randn(2, 3, 16, 16), lengths=[2, 2])


def test_image_layouts_agree():
    torch.manual_seed(0)
    a = _model(input_shape=(3, 16, 16), layout="NCHW").eval()
    b = _model(input_shape=(16, 16, 3), layout="NHWC").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(b(x.permute(0, 2, 3, 1)), a(x))


def test_series_ntf_and_nft_with_conv1d():
    torch.manual_seed(0)
    a = CNNLSTM(input_shape=(20, 6), layout="NTF", hidden_size=8, num_classes=3, backbone_options={"channels": (8,)})
    assert a.config.backbone == "conv1d"
    assert a.config.bridge == "none"
    assert a.rnn.input_size == 8
    a.eval()
    b = CNNLSTM(input_shape=(6, 20), layout="NFT", hidden_size=8, num_classes=3, backbone_options={"channels": (8,)})
    b.load_state_dict(a.state_dict())
    b.eval()
    x = torch.randn(2, 20, 6)
    y = a(x)
    assert y.shape == (2, 3)
    torch.testing.assert_close(b(x.transpose(1, 2)), y)


def test_series_wrong_orientation_suggests_nft():
    model = CNNLSTM(input_shape=(20, 6), layout="NTF", hidden_size=8, backbone_options={"channels": (8,)})
    with pytest.raises(ShapeError, match="layout='NFT'"):
        model(torch.randn(2, 6, 20))


@pytest.mark.parametrize("head", ["last", "frames"])
def test_none_time_accepts_several_lengths(head):
    model = _model(input_shape=(None, 3, 16, 16), head=head)
    assert model.config.input_shape[0] is None
    for t in (1, 3, 7):
        y = model(_clip(t=t, h=16, w=16))
        assert y.shape == ((2, t, 5) if head == "frames" else (2, 5))


def test_channels_last_input_to_ntchw_model_suggests_nthwc():
    model = _model()
    with pytest.raises(ShapeError, match=r"layout='NTHWC'.*x\.permute\(0, 1, 4, 2, 3\)"):
        model(torch.zeros(2, 4, 32, 32, 3))


def test_single_sample_without_batch_axis():
    with pytest.raises(ShapeError, match=r"x\.unsqueeze\(0\)"):
        _model()(torch.zeros(4, 3, 32, 32))


def test_flatten_model_rejects_other_frame_sizes():
    model = _model(bridge="flatten")
    with pytest.raises(ShapeError, match=r"bridge='flatten'.*H, W = \(32, 32\)"):
        model(_clip(h=16, w=16))


def test_frames_too_small_for_the_backbone_raise_shape_error():
    with pytest.raises(ShapeError, match="MaxPool2d"):
        _model()(_clip(h=1, w=1))


def test_frames_too_small_for_the_backbone_raise_shape_error_in_nhwc():
    model = _model(input_shape=(16, 16, 3), layout="NHWC")
    with pytest.raises(ShapeError, match="MaxPool2d"):
        model(torch.zeros(2, 1, 1, 3))


# ----------------------------------------------------------------------------- config


def test_config_json_round_trip():
    model = _model(rnn="gru", bidirectional=True, head="mean", bridge="grid", bridge_options={"k": 3})
    text = model.config.to_json()
    data = json.loads(text)
    assert data["backbone"] == "small"
    assert data["bridge"] == "grid"
    assert data["bridge_options"] == {"k": 3}
    assert data["input_shape"] == [4, 3, 32, 32]
    assert data["backbone_options"] == {"channels": [8, 16]}
    again = CNNLSTMConfig.from_json(text)
    assert again.to_json() == text
    assert again.input_shape == (4, 3, 32, 32)
    rebuilt = CNNLSTM.from_config(again)
    assert rebuilt.rnn.input_size == model.rnn.input_size == 16 * 9
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_config_with_none_time_round_trips():
    cfg = _model(input_shape=(None, 3, 32, 32)).config
    assert json.loads(cfg.to_json())["input_shape"] == [None, 3, 32, 32]
    assert CNNLSTMConfig.from_json(cfg.to_json()).input_shape == (None, 3, 32, 32)


def test_config_unknown_key_raises():
    with pytest.raises(ConfigError, match=r"unknown CNNLSTM config keys \['colour'\]"):
        CNNLSTMConfig.from_dict({"colour": "red"})


def test_from_config_dict_with_overrides():
    model = CNNLSTM.from_config(_model().config.to_dict(), num_classes=7)
    assert model(_clip()).shape == (2, 7)


# ----------------------------------------------------------------------------- save / load


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"rnn": "gru", "bidirectional": True, "head": "attention"},
        {"bridge": "attention", "head": "frames", "input_shape": (None, 3, 32, 32)},
        {"bn": "frozen", "bridge": "grid", "bridge_options": {"k": 3}},
    ],
)
def test_save_load_bit_identical(tmp_path, kwargs):
    torch.manual_seed(0)
    model = _model(**kwargs)
    model(_clip(seed=1))  # train-mode forward: BatchNorm statistics move (unless frozen)
    model.eval()
    out = model.save_pretrained(tmp_path / "m")
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "config.json").read_text())["rnn"] == model.config.rnn
    loaded = CNNLSTM.from_pretrained(out).eval()
    x = _clip(seed=2)
    assert torch.equal(loaded(x), model(x))
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert loaded.config.to_json() == model.config.to_json()


def test_from_pretrained_custom_backbone_needs_it_again(tmp_path):
    torch.manual_seed(0)
    model = _model(backbone=cnnlstm.SmallCNN(3, channels=(8,))).eval()
    assert model.config.backbone == "custom"
    model.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"custom backbone.*pass it again.*backbone=my_backbone"):
        CNNLSTM.from_pretrained(tmp_path)
    loaded = CNNLSTM.from_pretrained(tmp_path, backbone=cnnlstm.SmallCNN(3, channels=(8,))).eval()
    x = _clip()
    assert torch.equal(loaded(x), model(x))


def test_from_pretrained_custom_bridge_needs_it_again(tmp_path):
    class MeanBridge(cnnlstm.Bridge):
        def out_features(self, c, h=None, w=None):
            return c

        def forward(self, x):
            return x.mean(dim=(-2, -1))

    _model(bridge=MeanBridge()).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="pass it again"):
        CNNLSTM.from_pretrained(tmp_path)


def test_save_load_bridge_instance_with_options(tmp_path):
    model = _model(bridge=cnnlstm.bridge("grid", k=3)).eval()
    model.save_pretrained(tmp_path)
    loaded = CNNLSTM.from_pretrained(tmp_path).eval()
    x = _clip()
    assert torch.equal(loaded(x), model(x))


def test_from_pretrained_missing_files(tmp_path):
    with pytest.raises(ConfigError, match=r"is not a saved CNNLSTM: config\.json is missing"):
        CNNLSTM.from_pretrained(tmp_path)


def test_save_overwrites_in_place(tmp_path):
    _model(num_classes=3).save_pretrained(tmp_path)
    _model(num_classes=4).save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert CNNLSTM.from_pretrained(tmp_path).config.num_classes == 4


# ----------------------------------------------------------------------------- BatchNorm policy


def test_bn_frozen_keeps_running_stats_in_train_mode():
    torch.manual_seed(0)
    model = _model(bn="frozen")
    model.train()
    bn = _first_bn(model)
    before = bn.running_mean.clone()
    model(_clip() * 3 + 1).sum().backward()
    assert torch.equal(bn.running_mean, before)
    assert not bn.training
    assert not bn.weight.requires_grad
    assert bn.weight.grad is None
    assert _first_conv(model).weight.grad.abs().sum() > 0  # the convolutions still train
    assert model.training and model.rnn.training


def test_bn_train_updates_running_stats():
    torch.manual_seed(0)
    model = _model(bn="train")
    model.train()
    bn = _first_bn(model)
    before = bn.running_mean.clone()
    model(_clip() * 3 + 1)
    assert not torch.equal(bn.running_mean, before)
    assert bn.training
    assert bn.weight.requires_grad


def test_bn_default_is_train_without_weights():
    assert _model().bn == "train"
    assert _model().config.bn == "train"


def test_bn_frozen_for_series_backbone():
    model = CNNLSTM(input_shape=(10, 4), layout="NTF", hidden_size=8, bn="frozen", backbone_options={"channels": (8,)})
    model.train()
    bn = _first_bn(model)
    before = bn.running_mean.clone()
    model(torch.randn(2, 10, 4) + 2)
    assert torch.equal(bn.running_mean, before)


def test_bn_frozen_survives_save_load(tmp_path):
    _model(bn="frozen").save_pretrained(tmp_path)
    loaded = CNNLSTM.from_pretrained(tmp_path)
    loaded.train()
    assert loaded.bn == "frozen"
    assert not _first_bn(loaded).training


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_from_local_file_load_and_freeze_bn(tmp_path, suffix):
    torch.manual_seed(1)
    cnn = cnnlstm.SmallCNN(3, channels=(8, 16))
    with torch.no_grad():
        cnn.block1.bn.running_mean.uniform_(-1, 1)
    path = tmp_path / f"small{suffix}"
    if suffix == ".safetensors":
        save_file(cnn.state_dict(), str(path))
    else:
        torch.save(cnn.state_dict(), path)
    model = _model(backbone_options={"channels": (8, 16), "weights": str(path)})
    assert model.bn == "frozen"
    assert "weights" not in model.config.backbone_options
    for k, v in cnn.state_dict().items():
        assert torch.equal(model.backbone.module.state_dict()[k], v)


# ----------------------------------------------------------------------------- fuzz: wrong shapes raise ShapeError only

_MODELS: dict[str, CNNLSTM] = {}


def _fuzz_model(layout: str) -> CNNLSTM:
    if layout not in _MODELS:
        shape = {"NTCHW": (None, 3, 8, 8), "NTHWC": (None, 8, 8, 3), "NCHW": (3, 8, 8), "NTF": (None, 4)}[layout]
        _MODELS[layout] = CNNLSTM(
            input_shape=shape, layout=layout, hidden_size=4, num_classes=2, backbone_options={"channels": (4,)}
        )
    return _MODELS[layout]


@st.composite
def wrong_inputs(draw):
    layout = draw(st.sampled_from(["NTCHW", "NTHWC", "NCHW", "NTF"]))
    rank = len(layout)
    channel_axis = layout.index("F" if layout == "NTF" else "C")
    want = 4 if layout == "NTF" else 3
    if draw(st.booleans()):
        bad_rank = draw(st.sampled_from([r for r in range(1, 8) if r != rank]))
        shape = draw(st.lists(st.integers(1, 4), min_size=bad_rank, max_size=bad_rank))
    else:
        shape = [draw(st.integers(1, 3)), *(draw(st.integers(4, 9)) for _ in range(rank - 1))]
        shape[channel_axis] = draw(st.integers(1, 6).filter(lambda c: c != want))
    return layout, tuple(shape)


@SETTINGS
@given(wrong_inputs())
def test_fuzz_wrong_shapes_into_model_raise_shape_error(case):
    layout, shape = case
    with pytest.raises(ShapeError):
        _fuzz_model(layout)(torch.zeros(shape))


@st.composite
def wrong_bridge_inputs(draw):
    name = draw(st.sampled_from(["gap", "gmp", "grid", "flatten", "attention", "spatial", "none"]))
    rank = {"spatial": 4, "none": 3}.get(name, 5)
    if name == "attention" and draw(st.booleans()):
        shape = (2, 3, draw(st.integers(1, 8).filter(lambda c: c != 4)), 3, 3)  # built for C=4
    else:
        bad_rank = draw(st.sampled_from([r for r in range(0, 8) if r != rank]))
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=bad_rank, max_size=bad_rank)))
    return name, shape


@SETTINGS
@given(wrong_bridge_inputs())
def test_fuzz_wrong_shapes_into_bridges_raise_shape_error(case):
    name, shape = case
    b = cnnlstm.bridge(name, channels=4) if name == "attention" else cnnlstm.bridge(name)
    with pytest.raises(ShapeError, match=f"bridge '{name}'"):
        b(torch.zeros(shape))
    if len(shape) != len(b.in_axes):  # output_shape checks the rank only
        with pytest.raises(ShapeError, match=f"bridge '{name}'"):
            b.output_shape(shape)
