"""Bridges: every registered bridge's shapes, values, errors and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnlstm
from cnnlstm import BRIDGES, Bridge, bridge
from cnnlstm._messages import clip_maps_fix, suggested_bridges

SETTINGS = settings(max_examples=30, deadline=None)
NAMES = BRIDGES.names()
dims = st.integers(1, 4)
sides = st.integers(1, 6)


def _make(name: str, c: int) -> Bridge:
    return bridge(name, channels=c) if name == "attention" else bridge(name)


def _example_shape(b: Bridge, n: int, t: int, c: int, h: int, w: int) -> tuple:
    return {"NTCHW": (n, t, c, h, w), "NCHW": (n, c, h, w), "NTF": (n, t, c)}[b.in_axes]


# ----------------------------------------------------------------------------- the registry-wide smoke test


def test_registry_holds_the_documented_bridges():
    assert {"gap", "gmp", "grid", "flatten", "attention", "spatial", "none"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_bridge_shape_and_gradients(name):
    torch.manual_seed(0)
    n, t, c, h, w = 2, 3, 4, 5, 6
    b = _make(name, c)
    assert isinstance(b, Bridge)
    shape = _example_shape(b, n, t, c, h, w)
    x = torch.randn(shape, requires_grad=True)
    y = b(x)
    assert tuple(y.shape) == b.output_shape(shape)
    assert y.shape[0] == n
    assert y.shape[-1] == b.out_features(c, h, w)
    assert torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) > 0
    for pname, p in b.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, pname


@pytest.mark.parametrize("name", NAMES)
def test_every_bridge_output_shape_with_unknown_time(name):
    b = _make(name, 4)
    if b.in_axes == "NCHW":
        assert b.output_shape((2, 4, None, 6)) == (2, None, 4)
    else:
        shape = _example_shape(b, 2, None, 4, 5, 6)
        out = b.output_shape(shape)
        assert out[:2] == (2, None)
        assert out[-1] == b.out_features(4, 5, 6)


# ----------------------------------------------------------------------------- documented shape rules (hypothesis)


@SETTINGS
@given(n=dims, t=dims, c=dims, h=sides, w=sides)
def test_gap_is_the_spatial_mean(n, t, c, h, w):
    torch.manual_seed(n * 1000 + t * 100 + c * 10 + h + w)
    x = torch.randn(n, t, c, h, w)
    b = bridge("gap")
    y = b(x)
    assert y.shape == (n, t, c) == b.output_shape(x.shape)
    torch.testing.assert_close(y, x.reshape(n, t, c, h * w).mean(-1), atol=1e-6, rtol=1e-6)


@SETTINGS
@given(n=dims, t=dims, c=dims, h=sides, w=sides)
def test_gmp_is_the_spatial_max(n, t, c, h, w):
    torch.manual_seed(n * 1000 + t * 100 + c * 10 + h + w)
    x = torch.randn(n, t, c, h, w)
    b = bridge("gmp")
    y = b(x)
    assert y.shape == (n, t, c) == b.output_shape(x.shape)
    torch.testing.assert_close(y, x.reshape(n, t, c, h * w).amax(-1), atol=0, rtol=0)


@SETTINGS
@given(n=dims, t=dims, c=dims, h=sides, w=sides, k=st.integers(1, 3))
def test_grid_shape(n, t, c, h, w, k):
    torch.manual_seed(0)
    x = torch.randn(n, t, c, h, w)
    b = bridge("grid", k=k)
    y = b(x)
    assert y.shape == (n, t, c * k * k) == b.output_shape(x.shape)
    assert b.out_features(c) == c * k * k
    frame = F.adaptive_avg_pool2d(x[-1, -1], k)  # (C, k, k): the last frame alone
    torch.testing.assert_close(y[-1, -1], frame.flatten(), atol=1e-6, rtol=1e-6)


@SETTINGS
@given(n=dims, t=dims, c=dims, k=st.integers(1, 3), a=st.integers(1, 3), b_=st.integers(1, 3))
def test_grid_cells_are_block_means_in_c_i_j_order(n, t, c, k, a, b_):
    torch.manual_seed(0)
    h, w = k * a, k * b_
    x = torch.randn(n, t, c, h, w)
    y = bridge("grid", k=k)(x)
    cells = x.reshape(n, t, c, k, a, k, b_).mean(dim=(4, 6))  # (N, T, C, k, k): cell (i, j) of channel c
    torch.testing.assert_close(y, cells.flatten(2), atol=1e-6, rtol=1e-6)


@SETTINGS
@given(n=dims, t=dims, c=dims, h=sides, w=sides)
def test_flatten_keeps_everything(n, t, c, h, w):
    torch.manual_seed(0)
    x = torch.randn(n, t, c, h, w)
    b = bridge("flatten")
    y = b(x)
    assert y.shape == (n, t, c * h * w) == b.output_shape(x.shape)
    assert b.out_features(c, h, w) == c * h * w
    assert torch.equal(y, x.reshape(n, t, -1))


@SETTINGS
@given(n=dims, t=dims, c=dims, h=sides, w=sides)
def test_attention_maps_sum_to_one_and_weight_the_average(n, t, c, h, w):
    torch.manual_seed(c * 100 + h * 10 + w)
    x = torch.randn(n, t, c, h, w)
    b = bridge("attention", channels=c)
    y, maps = b(x, return_attention=True)
    assert y.shape == (n, t, c) == b.output_shape(x.shape)
    assert maps.shape == (n, t, h, w)
    assert (maps >= 0).all()
    torch.testing.assert_close(maps.sum(dim=(-2, -1)), torch.ones(n, t), atol=1e-5, rtol=0)
    expected = (x * maps.unsqueeze(2)).sum(dim=(-2, -1))  # (N, T, C): the map-weighted average
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b(x), y)


@SETTINGS
@given(n=dims, c=dims, h=sides, w=sides)
def test_spatial_is_a_row_major_raster_scan(n, c, h, w):
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w)
    b = bridge("spatial")
    y = b(x)
    assert y.shape == (n, h * w, c) == b.output_shape(x.shape)
    for i in range(h):
        for j in range(w):
            assert torch.equal(y[:, i * w + j], x[:, :, i, j])


@SETTINGS
@given(n=dims, t=dims, f=dims)
def test_none_is_the_identity(n, t, f):
    torch.manual_seed(0)
    x = torch.randn(n, t, f)
    b = bridge("none")
    assert torch.equal(b(x), x)
    assert b.output_shape(x.shape) == (n, t, f)
    assert b.out_features(f) == f


# ----------------------------------------------------------------------------- wrong shapes


@SETTINGS
@given(name=st.sampled_from(NAMES), data=st.data())
def test_wrong_rank_is_only_ever_a_shape_error(name, data):
    torch.manual_seed(0)
    b = _make(name, 2)
    rank = data.draw(st.integers(1, 6).filter(lambda r: r != len(b.in_axes)), label="rank")
    shape = tuple(data.draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank), label="shape"))
    with pytest.raises(cnnlstm.ShapeError, match=f"bridge '{name}' wants"):
        b(torch.randn(shape))
    with pytest.raises(cnnlstm.ShapeError, match=f"bridge '{name}' wants"):
        b.output_shape(shape)


@pytest.mark.parametrize("name", ["gap", "gmp", "grid", "flatten"])
def test_clip_bridge_given_image_maps_suggests_spatial(name):
    with pytest.raises(cnnlstm.ShapeError, match=r"\(N, T, C, H, W\), got 4-D \(2, 8, 7, 7\).*bridge='spatial'"):
        bridge(name)(torch.zeros(2, 8, 7, 7))


def test_clip_bridge_given_a_sequence_suggests_none():
    with pytest.raises(cnnlstm.ShapeError, match=r"got 3-D \(2, 5, 8\).*bridge='none'"):
        bridge("gap")(torch.zeros(2, 5, 8))


@pytest.mark.parametrize("name", ["spatial", "none"])
def test_sequence_and_image_bridges_given_a_clip_suggest_gap(name):
    with pytest.raises(cnnlstm.ShapeError, match=r"got 5-D \(2, 3, 8, 7, 7\).*'gap'"):
        bridge(name)(torch.zeros(2, 3, 8, 7, 7))


def test_attention_wrong_channels_names_the_fix():
    with pytest.raises(cnnlstm.ShapeError, match=r"built for C=4 channels.*channels=6"):
        bridge("attention", channels=4)(torch.zeros(2, 3, 6, 5, 5))


def test_flatten_needs_fixed_spatial_sizes():
    with pytest.raises(cnnlstm.ShapeError, match=r"flatten.*H and W"):
        bridge("flatten").output_shape((2, 3, 4, None, 5))


# ----------------------------------------------------------------------------- built for the backbone's feature maps


@pytest.mark.parametrize("name", NAMES)
def test_every_bridge_builds_for_a_feature_shape(name):
    cls = BRIDGES.get(name)
    shape = _example_shape(cls, 2, 3, 8, 5, 5)  # by the class's in_axes
    b = bridge(name, feature_shape=shape)
    assert b.output_shape(shape)[0] == 2  # built for these maps, it takes them


def test_attention_learns_its_channels_from_the_feature_shape_unless_given():
    assert bridge("attention", feature_shape=(1, 4, 12, 7, 7)).channels == 12
    assert bridge("attention", feature_shape=(1, 4, 12, 7, 7), channels=5).channels == 5
    assert bridge("grid", feature_shape=(1, 4, 12, 7, 7), k=3).k == 3


def test_flatten_checks_the_frame_size_it_was_built_for():
    b = bridge("flatten")
    b.check_input((4, 3, 32, 32), (7, 3, 32, 32))  # another T is fine
    with pytest.raises(
        cnnlstm.ShapeError, match=r"bridge='flatten' was built for frames of H, W = \(32, 32\), got \(16, 32\)"
    ):
        b.check_input((4, 3, 32, 32), (4, 3, 16, 32))


@pytest.mark.parametrize("name", [n for n in NAMES if n != "flatten"])
def test_other_bridges_take_any_frame_size(name):
    _make(name, 3).check_input((4, 3, 32, 32), (4, 3, 16, 40))  # no error


# ----------------------------------------------------------------------------- configuration errors


def test_unknown_bridge_lists_every_valid_name():
    with pytest.raises(cnnlstm.ConfigError, match="unknown bridge 'gapp'") as info:
        bridge("gapp")
    for name in NAMES:
        assert name in str(info.value)


def test_registering_a_duplicate_name_is_an_error():
    original = BRIDGES.get("gap")

    class Other(Bridge):
        pass

    with pytest.raises(cnnlstm.ConfigError, match="'gap' is registered already"):
        cnnlstm.register_bridge("gap")(Other)
    assert BRIDGES.get("gap") is original
    assert BRIDGES.names() == NAMES


def test_attention_without_channels_is_a_config_error():
    with pytest.raises(cnnlstm.ConfigError, match="attention' needs channels=C"):
        bridge("attention")


def test_unknown_option_is_a_config_error():
    with pytest.raises(cnnlstm.ConfigError, match=r"bridge 'gap' does not take these options \['k'\]"):
        bridge("gap", k=3)


def test_grid_needs_a_positive_k():
    with pytest.raises(cnnlstm.ConfigError, match="k >= 1"):
        bridge("grid", k=0)


# ----------------------------------------------------------------------------- the fix for clip maps names them


@pytest.mark.parametrize("name", NAMES)
def test_every_bridge_has_an_example_with_its_default_options(name):
    b = BRIDGES.get(name).example(6)
    assert type(b) is BRIDGES.get(name)
    assert b.options() == _make(name, 6).options()
    assert b.out_features(6, 5, 4) == _make(name, 6).out_features(6, 5, 4)


def test_the_fix_names_every_suggested_clip_bridge_with_the_F_it_gives():
    assert [b.name for b in suggested_bridges(64)] == ["gap", "grid", "flatten", "attention"]  # gmp: same F as gap
    assert all(p.device.type == "meta" for b in suggested_bridges(64) for p in b.parameters())
    assert clip_maps_fix((8, 16, 64, 7, 7), 64) == (
        'Put a bridge in front: bridge="gap" gives F=64, bridge="grid" gives F=256, bridge="flatten" gives F=3136, '
        'bridge="attention" gives F=64 (bridge="gap" fits input_size=64).'
    )


def test_the_fix_asks_a_grid_for_its_own_k():
    text = clip_maps_fix((8, 16, 64, 7, 7), 576, bridges=[bridge("gap"), bridge("grid", k=3), bridge("grid")])
    assert text == (
        'Put a bridge in front: bridge="gap" gives F=64, bridge="grid" (k=3) gives F=576, bridge="grid" gives F=256 '
        '(bridge="grid" (k=3) fits input_size=576).'
    )


def test_a_registered_bridge_that_needs_options_is_left_out_of_the_fix(monkeypatch):
    class Needs(Bridge):
        name = "needs"

        def __init__(self, size: int):
            super().__init__()

    monkeypatch.setitem(BRIDGES._table, "needs", Needs)
    assert [b.name for b in suggested_bridges(8)] == ["gap", "grid", "flatten", "attention"]
