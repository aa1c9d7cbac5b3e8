"""Layouts: permutations, the one permute at the entry, canonical shapes and their errors."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnlstm
from cnnlstm import Layout
from cnnlstm import layout as L

KINDS = {
    "clip": ["NTCHW", "NTHWC", "NCTHW"],
    "image": ["NCHW", "NHWC"],
    "series": ["NTF", "NFT"],
}
CANONICAL = {"clip": "NTCHW", "image": "NCHW", "series": "NTF"}
ALL = [lay for lays in KINDS.values() for lay in lays]
SAME_KIND = [(a, b) for lays in KINDS.values() for a in lays for b in lays]
SIZES = {"N": 2, "T": 3, "C": 4, "H": 5, "W": 6, "F": 7}  # a distinct size per axis letter


def _shape(layout: str) -> tuple:
    return tuple(SIZES[a] for a in layout)


def test_every_layout_is_known():
    assert {lay.value for lay in Layout} == set(ALL)
    for k, lays in KINDS.items():
        for lay in lays:
            assert L.kind(lay) == k
            assert L.canonical(lay) == CANONICAL[k]
    assert str(Layout.NTHWC) == "NTHWC"


# ----------------------------------------------------------------------------- permutation


@pytest.mark.parametrize(("src", "dst"), SAME_KIND)
def test_permutation_round_trips(src, dst):
    p, q = L.permutation(src, dst), L.permutation(dst, src)
    assert "".join(src[i] for i in p) == dst
    torch.manual_seed(0)
    x = torch.randn(_shape(src))
    y = x.permute(p)
    assert y.shape == _shape(dst)
    assert torch.equal(y.permute(q), x)


def test_permutation_docstring_example():
    assert L.permutation("NTHWC", "NTCHW") == (0, 1, 4, 2, 3)
    assert L.permutation(Layout.NCTHW, "ntchw") == (0, 2, 1, 3, 4)


@pytest.mark.parametrize(("src", "dst"), [("NTCHW", "NCHW"), ("NTF", "NCHW"), ("NHWC", "NFT")])
def test_permutation_across_kinds_is_a_config_error(src, dst):
    with pytest.raises(cnnlstm.ConfigError, match=f"cannot permute {src} into {dst}"):
        L.permutation(src, dst)


# ----------------------------------------------------------------------------- to_canonical


def _check_values(x: torch.Tensor, y: torch.Tensor, src: str, dst: str) -> None:
    """``y[index in dst] == x[same index in src]`` for every index."""
    assert y.shape == tuple(x.shape[src.index(a)] for a in dst)
    for idx in itertools.product(*(range(s) for s in y.shape)):
        named = dict(zip(dst, idx))
        assert y[idx] == x[tuple(named[a] for a in src)]


@pytest.mark.parametrize(
    ("layout", "canonical"),
    [("NTHWC", "NTCHW"), ("NCTHW", "NTCHW"), ("NHWC", "NCHW"), ("NFT", "NTF")],
)
def test_to_canonical_moves_the_values(layout, canonical):
    x = torch.arange(torch.Size(_shape(layout)).numel()).reshape(_shape(layout))
    y = cnnlstm.to_canonical(x, layout)
    _check_values(x, y, layout, canonical)
    assert y.data_ptr() == x.data_ptr()  # a view, no copy


def test_to_canonical_explicit_examples():
    x = torch.arange(2 * 3 * 4).reshape(1, 2, 3, 4)  # NHWC: H=2, W=3, C=4
    y = cnnlstm.to_canonical(x, "NHWC")  # NCHW
    assert y.shape == (1, 4, 2, 3)
    assert y[0, 1, 0, 2].item() == x[0, 0, 2, 1].item() == 9
    s = torch.tensor([[[1, 2, 3], [4, 5, 6]]])  # NFT: F=2 features over T=3 steps
    assert cnnlstm.to_canonical(s, "NFT").tolist() == [[[1, 4], [2, 5], [3, 6]]]


@pytest.mark.parametrize("layout", ["NTCHW", "NCHW", "NTF"])
def test_canonical_layouts_are_returned_as_is(layout):
    x = torch.zeros(_shape(layout))
    assert cnnlstm.to_canonical(x, layout) is x


def test_layout_names_are_case_insensitive():
    x = torch.zeros(_shape("NTHWC"))
    assert cnnlstm.to_canonical(x, "nthwc").shape == _shape("NTCHW")
    assert L.canonical_shape(_shape("NFT"), "nft") == _shape("NTF")


@pytest.mark.parametrize("layout", ALL)
@pytest.mark.parametrize("delta", [-1, 1])
def test_to_canonical_wrong_rank_is_a_shape_error(layout, delta):
    shape = (2,) * (len(layout) + delta)
    with pytest.raises(cnnlstm.ShapeError, match=rf"layout {layout} wants \({', '.join(layout)}\), got {len(shape)}-D"):
        cnnlstm.to_canonical(torch.zeros(shape), layout)


def test_to_canonical_wrong_rank_hints():
    with pytest.raises(cnnlstm.ShapeError, match=r"x\.unsqueeze\(0\)"):
        cnnlstm.to_canonical(torch.zeros(3, 4, 5, 6), "NTHWC")
    with pytest.raises(cnnlstm.ShapeError, match="needs a clip layout"):
        cnnlstm.to_canonical(torch.zeros(2, 3, 4, 5, 6), "NHWC")


# ----------------------------------------------------------------------------- canonical_shape


@pytest.mark.parametrize("layout", ALL)
def test_canonical_shape_with_and_without_n(layout):
    target = CANONICAL[L.kind(layout)]
    full = L.canonical_shape(_shape(layout), layout)
    assert full == _shape(target)
    assert L.canonical_shape(_shape(layout)[1:], layout) == _shape(target)[1:]


def test_canonical_shape_docstring_and_unknown_sizes():
    assert L.canonical_shape((16, 112, 112, 3), "NTHWC") == (16, 3, 112, 112)
    assert L.canonical_shape((8, None, 112, 112, 3), "NTHWC") == (8, None, 3, 112, 112)
    assert L.canonical_shape((3, None, 64, 64), "NCTHW") == (None, 3, 64, 64)
    assert L.canonical_shape((40, None), "NFT") == (None, 40)


@pytest.mark.parametrize("layout", ALL)
@pytest.mark.parametrize("rank", [1, 6])
def test_canonical_shape_wrong_rank_is_a_shape_error(layout, rank):
    with pytest.raises(cnnlstm.ShapeError, match=rf"layout {layout} wants a shape of {len(layout)} axes"):
        L.canonical_shape((2,) * rank, layout)


# ----------------------------------------------------------------------------- unknown layouts


@pytest.mark.parametrize(
    "call",
    [
        lambda: cnnlstm.to_canonical(torch.zeros(2, 3, 4), "NXT"),
        lambda: L.canonical_shape((2, 3, 4), "NXT"),
        lambda: L.permutation("NXT", "NTF"),
        lambda: L.kind("NXT"),
        lambda: L.canonical("NXT"),
    ],
    ids=["to_canonical", "canonical_shape", "permutation", "kind", "canonical"],
)
def test_unknown_layout_is_a_config_error_listing_valid_ones(call):
    with pytest.raises(cnnlstm.ConfigError, match="unknown layout 'NXT'") as info:
        call()
    for lay in ALL:
        assert lay in str(info.value)


# ----------------------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(layout=st.sampled_from(ALL), data=st.data())
def test_to_canonical_agrees_with_canonical_shape(layout, data):
    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=len(layout), max_size=len(layout)), label="shape"))
    torch.manual_seed(0)
    x = torch.randn(shape)
    y = cnnlstm.to_canonical(x, layout)
    target = CANONICAL[L.kind(layout)]
    assert tuple(y.shape) == L.canonical_shape(shape, layout)
    assert L.canonical_shape(shape[1:], layout) == tuple(y.shape[1:])
    assert tuple(y.shape) == tuple(shape[layout.index(a)] for a in target)
    back = y.permute(L.permutation(target, layout))
    assert torch.equal(back, x)


@settings(max_examples=40, deadline=None)
@given(layout=st.sampled_from(ALL), data=st.data())
def test_wrong_ranks_are_only_ever_shape_errors(layout, data):
    rank = data.draw(st.integers(1, 7).filter(lambda r: r != len(layout)), label="rank")
    shape = tuple(data.draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank), label="shape"))
    with pytest.raises(cnnlstm.ShapeError):
        cnnlstm.to_canonical(torch.zeros(shape), layout)
    if rank != len(layout) - 1:  # one axis fewer is a shape without N, which is valid
        with pytest.raises(cnnlstm.ShapeError):
            L.canonical_shape(shape, layout)


# ----------------------------------------------------------------------------- frames: one step of a sequence


@pytest.mark.parametrize(
    ("layout", "frame"), [("NTCHW", "NCHW"), ("NCTHW", "NCHW"), ("NTHWC", "NHWC"), ("NTF", "NF"), ("NFT", "NF")]
)
def test_frame_layout_drops_the_time_axis(layout, frame):
    assert L.frame_layout(layout) == frame


def test_frame_to_canonical_moves_the_values():
    x = torch.randn(2, 5, 6, 3)  # (N, H, W, C)
    y = L.frame_to_canonical(x, "NTHWC")
    assert y.shape == (2, 3, 5, 6) and torch.equal(y[1, 2, 4, 5], x[1, 4, 5, 2])
    z = torch.randn(2, 3, 5, 6)
    assert L.frame_to_canonical(z, "NCTHW") is z
    f = torch.randn(2, 4)
    assert L.frame_to_canonical(f, "NFT") is f


def test_layouts_without_time_have_no_frames():
    with pytest.raises(cnnlstm.ConfigError, match="NCHW has no time axis"):
        L.frame_layout("NCHW")


@pytest.mark.parametrize(
    ("layout", "axis"), [("NTCHW", 1), ("NTHWC", 1), ("NCTHW", 1), ("NCHW", 0), ("NHWC", 0), ("NTF", 1), ("NFT", 1)]
)
def test_channel_axis_is_where_c_or_f_sits_in_a_canonical_sample(layout, axis):
    assert L.channel_axis(layout) == axis
