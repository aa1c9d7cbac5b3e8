"""Which frames make a clip: the documented indices of uniform, random and dense sampling, padding of
short videos, properties over random (frames, T, stride), and ConfigError for bad arguments."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlstm.data import PADS, SAMPLINGS, dense_windows, random_indices, sample, uniform_indices
from cnnlstm.errors import ConfigError

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)
frames_st = st.integers(1, 400)
t_st = st.integers(1, 24)
stride_st = st.integers(1, 8)


# ----------------------------------------------------------------------------- uniform


def test_uniform_documented_examples():
    assert uniform_indices(100, 4).tolist() == [12, 37, 62, 87]
    assert uniform_indices(3, 5).tolist() == [0, 0, 1, 2, 2]
    assert uniform_indices(3, 5, pad="lengths").tolist() == [0, 1, 2]
    assert uniform_indices(8, 8).tolist() == list(range(8))
    assert uniform_indices(1, 3).tolist() == [0, 0, 0]
    assert uniform_indices(10, 1).tolist() == [5]


@SETTINGS
@given(frames=frames_st, t=t_st)
def test_uniform_is_the_middle_of_t_equal_segments(frames, t):
    idx = uniform_indices(frames, t)
    assert len(idx) == t and idx.dtype == np.int64
    assert idx.min() >= 0 and idx.max() <= frames - 1
    for i, k in enumerate(idx.tolist()):
        middle = (i + 0.5) * frames / t
        assert k == int(np.floor(middle))
        assert i * frames / t < k + 1 and k < (i + 1) * frames / t  # frame k overlaps segment i
    if frames >= t:
        assert (np.diff(idx) > 0).all()  # T distinct frames, in order


@SETTINGS
@given(frames=st.integers(1, 30), extra=st.integers(1, 20))
def test_uniform_short_video_repeats_every_frame_or_returns_only_real_ones(frames, extra):
    t = frames + extra
    repeat = uniform_indices(frames, t, pad="repeat")
    assert len(repeat) == t and (np.diff(repeat) >= 0).all()
    assert set(repeat.tolist()) == set(range(frames))  # no frame lost, none invented
    assert uniform_indices(frames, t, pad="lengths").tolist() == list(range(frames))


# ----------------------------------------------------------------------------- random


def test_random_documented_example():
    assert random_indices(100, 4, stride=2, rng=np.random.default_rng(0)).tolist() == [79, 81, 83, 85]


@SETTINGS
@given(frames=frames_st, t=t_st, stride=stride_st, seed=st.integers(0, 2**16))
def test_random_is_a_contiguous_strided_clip_within_bounds(frames, t, stride, seed):
    idx = random_indices(frames, t, stride, rng=np.random.default_rng(seed))
    assert len(idx) == t
    assert idx.min() >= 0 and idx.max() <= frames - 1
    if frames < t:  # too short: every frame, then the last one repeated
        assert idx.tolist() == [*range(frames), *[frames - 1] * (t - frames)]
        return
    steps = np.diff(idx)
    if t > 1:
        effective = min(stride, (frames - 1) // (t - 1))  # the stride shrinks until the clip fits
        assert (steps == effective).all() and effective >= 1


@SETTINGS
@given(frames=st.integers(1, 40), extra=st.integers(1, 10), stride=stride_st)
def test_random_short_video_with_lengths_returns_only_real_frames(frames, extra, stride):
    idx = random_indices(frames, frames + extra, stride, rng=np.random.default_rng(0), pad="lengths")
    assert idx.tolist() == list(range(frames))


def test_random_shrinks_the_stride_for_a_short_video():
    idx = random_indices(10, 4, stride=5, rng=np.random.default_rng(0))
    assert idx.tolist() == [0, 3, 6, 9]  # span 16 > 10 frames: stride 3 is the largest that fits


def test_random_is_reproducible_and_reaches_both_ends():
    a = [random_indices(50, 5, 2, rng=np.random.default_rng(7)).tolist() for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng = np.random.default_rng(0)
    starts = {int(random_indices(20, 5, 2, rng=rng)[0]) for _ in range(400)}
    assert starts == set(range(20 - 9 + 1))  # every start 0..11 is drawn, none past the end


# ----------------------------------------------------------------------------- dense


def test_dense_documented_examples():
    assert [w.tolist() for w in dense_windows(10, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [6, 7, 8, 9]]
    assert [w.tolist() for w in dense_windows(10, 4, overlap=0.5)] == [
        [0, 1, 2, 3],
        [2, 3, 4, 5],
        [4, 5, 6, 7],
        [6, 7, 8, 9],
    ]
    assert [w.tolist() for w in dense_windows(12, 3, stride=2)] == [[0, 2, 4], [5, 7, 9], [7, 9, 11]]
    assert [w.tolist() for w in dense_windows(4, 4)] == [[0, 1, 2, 3]]


@SETTINGS
@given(frames=frames_st, t=t_st, stride=stride_st, overlap=st.sampled_from([0.0, 0.25, 0.5, 0.9]))
def test_dense_windows_cover_the_whole_video(frames, t, stride, overlap):
    span = (t - 1) * stride + 1
    if frames < span:
        return  # short videos: see the tests below
    windows = dense_windows(frames, t, stride, overlap=overlap)
    for w in windows:
        assert len(w) == t and (np.diff(w) == stride).all()
        assert w[0] >= 0 and w[-1] <= frames - 1
    starts = [int(w[0]) for w in windows]
    assert starts == sorted(set(starts))
    assert starts[0] == 0 and windows[-1][-1] == frames - 1  # the last one ends at the last frame
    covered = np.zeros(frames, bool)
    for s in starts:
        covered[s : s + span] = True
    assert covered.all()
    if stride == 1:
        assert set(np.concatenate(windows).tolist()) == set(range(frames))
    hop = max(1, round(span * (1 - overlap)))
    assert all(b - a == hop for a, b in itertools.pairwise(starts[:-1]))  # the last start may be pulled in


@SETTINGS
@given(frames=st.integers(1, 30), extra=st.integers(1, 10))
def test_dense_video_shorter_than_t_is_one_padded_window(frames, extra):
    t = frames + extra
    assert [w.tolist() for w in dense_windows(frames, t)] == [[*range(frames), *[frames - 1] * extra]]
    assert [w.tolist() for w in dense_windows(frames, t, pad="lengths")] == [list(range(frames))]


def test_dense_with_a_shrunk_stride_still_covers_the_first_and_last_frame():
    windows = dense_windows(4, 3, stride=2)
    assert windows[0][0] == 0 and windows[-1][-1] == 3


# ----------------------------------------------------------------------------- sample() and bad arguments


def test_sample_dispatches_by_name():
    assert SAMPLINGS == ("uniform", "random", "dense") and PADS == ("repeat", "lengths")
    (u,) = sample(100, 4)  # uniform is the default
    assert u.tolist() == [12, 37, 62, 87]
    (r,) = sample(100, 4, "random", stride=2, rng=np.random.default_rng(0))
    assert r.tolist() == [79, 81, 83, 85]
    assert [w.tolist() for w in sample(10, 4, "dense")] == [[0, 1, 2, 3], [4, 5, 6, 7], [6, 7, 8, 9]]
    assert [w.tolist() for w in sample(3, 5, "uniform", pad="lengths")] == [[0, 1, 2]]


def test_unknown_sampling_or_pad_lists_the_valid_names():
    with pytest.raises(ConfigError, match=r"unknown sampling 'strided': expected one of uniform, random, dense"):
        sample(10, 4, "strided")
    with pytest.raises(ConfigError, match=r"unknown pad policy 'zeros': expected one of repeat, lengths"):
        sample(10, 4, pad="zeros")
    with pytest.raises(ConfigError, match="unknown pad policy"):
        random_indices(3, 5, pad="zeros")  # short: the pad policy is needed, and checked
    with pytest.raises(ConfigError, match=r"overlap must be in \[0, 1\), got 1\.0"):
        dense_windows(10, 4, overlap=1.0)
    with pytest.raises(ConfigError, match="overlap must be in"):
        dense_windows(10, 4, overlap=-0.1)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: uniform_indices(3, 5, pad="zeros"), id="uniform-short"),
        pytest.param(lambda: uniform_indices(100, 4, pad="zeros"), id="uniform-long"),
        pytest.param(lambda: random_indices(100, 4, pad="zeros"), id="random-long"),
        pytest.param(lambda: dense_windows(100, 4, pad="zeros"), id="dense-long"),
    ],
)
def test_every_function_checks_the_pad_name(call):
    with pytest.raises(ConfigError, match="unknown pad policy 'zeros'"):
        call()


def _calls(frames: int, t: int, stride: int):
    return [
        lambda: uniform_indices(frames, t),
        lambda: random_indices(frames, t, stride, rng=np.random.default_rng(0)),
        lambda: dense_windows(frames, t, stride),
        *[lambda how=how: sample(frames, t, how, stride) for how in SAMPLINGS],
    ]


def test_wrong_numbers_say_what_is_wrong():
    with pytest.raises(ConfigError, match="a video needs at least one frame, got 0"):
        uniform_indices(0, 4)
    with pytest.raises(ConfigError, match=r"clip length T and stride must be positive, got T=0, stride=1"):
        random_indices(10, 0)
    with pytest.raises(ConfigError, match=r"got T=4, stride=0"):
        dense_windows(10, 4, stride=0)


@SETTINGS
@given(
    frames=st.integers(-5, 50),
    t=st.integers(-3, 10),
    stride=st.integers(-3, 4),
)
def test_any_non_positive_frames_t_or_stride_raises_config_error(frames, t, stride):
    bad_stride_matters = stride < 1  # uniform has no stride
    for i, call in enumerate(_calls(frames, t, stride)):
        uses_stride = i not in (0, 3)  # uniform_indices and sample(how="uniform")
        if frames < 1 or t < 1 or (uses_stride and bad_stride_matters):
            with pytest.raises(ConfigError):
                call()
        else:
            assert all(len(w) >= 1 for w in np.atleast_2d(call()))


@settings(max_examples=30, deadline=None)
@given(frames=st.integers(1, 200), t=st.integers(1, 32), seed=st.integers(0, 99))
def test_jittered_uniform_clips_stay_evenly_spaced_within_the_video(frames, t, seed):
    rng = np.random.default_rng(seed)
    idx = sample(frames, t, "uniform", rng=rng, jitter=True)[0]
    assert len(idx) == t and idx.min() >= 0 and idx.max() < frames
    if frames >= t:  # evenly spaced: every step is the segment length, rounded down or up
        assert set(np.diff(idx).tolist()) <= {frames // t, -(-frames // t)}


def test_jitter_moves_the_clip_and_without_it_the_clip_is_the_middle_one():
    rng = np.random.default_rng(0)
    drawn = {tuple(sample(100, 4, "uniform", rng=rng, jitter=True)[0]) for _ in range(20)}
    assert len(drawn) > 5
    assert sample(100, 4, "uniform", rng=rng)[0].tolist() == uniform_indices(100, 4).tolist() == [12, 37, 62, 87]
