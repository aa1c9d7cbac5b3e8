"""diagnosed() and shape_guard(): a failure becomes the diagnosis as one ShapeError, anything else passes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import cnnlstm
from cnnlstm import ShapeError, diagnose, explain, infer
from cnnlstm.errors import ConfigError
from cnnlstm.shapes._dry import dry_run
from cnnlstm.shapes.guard import diagnosed, shape_guard

SETTINGS = settings(max_examples=25, deadline=None)


class Raises(nn.Module):
    """A forward that raises ``error``, whatever it is given."""

    def __init__(self, error: Exception):
        super().__init__()
        self.error = error

    def forward(self, x):
        raise self.error


# ----------------------------------------------------------------------------- shape_guard


def test_guard_turns_a_pytorch_shape_failure_into_the_diagnosis():
    lstm = nn.LSTM(512, 8, batch_first=True)
    x = torch.zeros(2, 3, 64, 7, 7)
    with (
        pytest.raises(
            ShapeError,
            match=r"^LSTM wants \(N, T, F=512\) with batch_first=True, got \(2, 3, 64, 7, 7\): "
            r'a clip of feature maps\. Put a bridge in front: bridge="gap" gives F=64',
        ) as info,
        shape_guard(lstm, x.shape),
    ):
        lstm(x)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_guard_names_the_module_as_asked():
    conv = nn.Conv2d(3, 8, 3)
    want = r"^Net wants \(N, C=3, H, W\), got \(2, 5, 8, 8\): C=5 channels"
    with pytest.raises(ShapeError, match=want), shape_guard(conv, (2, 5, 8, 8), name="Net"):
        conv(torch.zeros(2, 5, 8, 8))


def test_guard_lets_a_failure_that_is_not_about_shapes_through():
    boom = Raises(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match=r"^boom$"), shape_guard(boom, (2, 3)):
        boom(torch.zeros(2, 3))


def test_guard_lets_other_error_types_and_cnnlstm_errors_through():
    with pytest.raises(TypeError, match="typed"), shape_guard(nn.Linear(3, 4), (2, 5)):
        raise TypeError("typed")
    with pytest.raises(ConfigError, match="own"), shape_guard(nn.Linear(3, 4), (2, 5)):
        raise ConfigError("own")


def test_guard_inside_a_dry_run_does_not_diagnose_again():
    linear = nn.Linear(3, 4)
    with dry_run(), pytest.raises(RuntimeError, match="mat1"), shape_guard(linear, (2, 5)):
        linear(torch.zeros(2, 5))


def test_guard_keeps_the_original_error_when_the_diagnosis_fails():
    linear = nn.Linear(3, 4)
    with pytest.raises(RuntimeError, match="mat1"), shape_guard(linear, (0, 5)):  # (0, 5): diagnose refuses N=0
        linear(torch.zeros(0, 5))


# ----------------------------------------------------------------------------- diagnosed, as infer and explain use it


def test_diagnosed_raises_even_an_unknown_failure_as_shape_error():
    broken = Raises(RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x5 and 7x3)"))
    with pytest.raises(ShapeError, match=r"^Raises got \(2, 5\): mat1 and mat2 shapes cannot be multiplied"):
        infer(broken, (2, 5))
    # explain shows its table up to the failure and the same message, rather than raising
    assert explain(broken, (2, 5)).error.startswith("Raises got (2, 5): mat1 and mat2 shapes cannot be multiplied")


def test_diagnosed_reraises_when_the_diagnosis_finds_nothing_about_shapes():
    flaky = Raises(RuntimeError("once"))
    with pytest.raises(KeyError), diagnosed(nn.Identity(), (2, 3)):
        raise KeyError("runs fine on meta")
    with pytest.raises(RuntimeError, match="once"), diagnosed(flaky, (2, 3), shape_words=True):
        raise RuntimeError("once")


# ----------------------------------------------------------------------------- fuzz: wrong shapes raise ShapeError only


@st.composite
def wrong_clip_shapes(draw):
    """Shapes that are not (N, T, 3, H, W): a wrong rank, or rank 5 with a wrong channel count."""
    if draw(st.booleans()):
        rank = draw(st.sampled_from([1, 2, 3, 4, 6, 7]))
        return tuple(draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank)))
    n, t = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    c = draw(st.integers(1, 8).filter(lambda c: c != 3))
    h, w = draw(st.integers(4, 16)), draw(st.integers(4, 16))
    return (n, t, c, h, w)


@pytest.fixture(scope="module")
def fuzz_model(small_model) -> cnnlstm.CNNLSTM:
    return small_model(input_shape=(None, 3, 16, 16), hidden_size=8)


@SETTINGS
@given(wrong_clip_shapes())
def test_fuzz_infer_wrong_shapes_raise_shape_error(fuzz_model, shape):
    with pytest.raises(ShapeError):
        infer(fuzz_model, shape)


@SETTINGS
@given(wrong_clip_shapes())
def test_fuzz_explain_wrong_shapes_say_why(fuzz_model, shape):
    table = explain(fuzz_model, shape)
    assert not table.ok and table.error and str(table).endswith(table.error)


@SETTINGS
@given(wrong_clip_shapes())
def test_fuzz_diagnose_never_raises_on_wrong_shapes(fuzz_model, shape):
    result = diagnose(fuzz_model, shape)
    assert not result.ok
    assert str(result.error)


@SETTINGS
@given(st.lists(st.integers(1, 6), min_size=1, max_size=6).map(tuple))
def test_fuzz_infer_on_a_backbone_raises_only_shape_error(shape):
    cnn = cnnlstm.SmallCNN(3, channels=(4,))
    try:
        out = infer(cnn, shape)
    except ShapeError:
        return
    # it ran: then it was a valid batch of 3-channel images
    assert len(shape) == 4
    assert shape[1] == 3
    assert tuple(out) == (shape[0], 4, shape[2] // 2, shape[3] // 2)
