"""Decoding with PyAV: each container the issue lists round-trips, resizing, gray, odd sizes, seeking,
rotation, and every broken file kind raises VideoError with its reason.

All videos are written by the tests (``make_video`` in conftest.py), 32x24 unless a test says otherwise.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnlstm.data import VideoInfo, iter_frames, probe, read_frames, write_video
from cnnlstm.data import video as video_mod
from cnnlstm.errors import CnnlstmError, VideoError

TOL = 8.0  # mean absolute error, in levels of 0..255, that a lossy codec may add

# (file name, encoder, the decoder probe() names, encoder options). MPEG-4 Part 2 at its default
# 200 kb/s blurs the +-6-level band code of adjacent frames, so it gets a higher bit rate.
CONTAINERS = [
    pytest.param("clip.mp4", None, "h264", None, id="mp4-h264"),
    pytest.param("clip.avi", None, "mpeg4", {"b": "1000000"}, id="avi-mpeg4"),
    pytest.param("clip.webm", None, "vp9", None, id="webm-vp9"),
    pytest.param("clip.mkv", None, "h264", None, id="mkv-h264"),
    pytest.param("mjpeg.avi", "mjpeg", "mjpeg", None, id="avi-mjpeg"),
]


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# ----------------------------------------------------------------------------- containers and codecs


@pytest.mark.parametrize(("name", "codec", "decoder", "options"), CONTAINERS)
def test_probe_reports_frames_rate_size_and_codec(make_video, name, codec, decoder, options):
    clip = make_video(name, 20, fps=10, codec=codec, options=options)
    info = probe(clip.path)
    assert isinstance(info, VideoInfo)
    assert (info.frames, info.fps, info.width, info.height) == (20, 10.0, 32, 24)
    assert info.codec == decoder
    assert info.rotation == 0
    assert info.keyframes[0] == 0 and list(info.keyframes) == sorted(set(info.keyframes))
    assert info.duration == pytest.approx(2.0)


@pytest.mark.parametrize(("name", "codec", "decoder", "options"), CONTAINERS)
def test_read_frames_matches_the_encoded_frames_in_order_with_repeats(
    make_video, frame_ids, name, codec, decoder, options
):
    clip = make_video(name, 20, codec=codec, options=options)
    indices = [3, 0, 19, 3, 7, 7, 12]
    got = read_frames(clip.path, indices)
    assert got.shape == (7, 24, 32, 3) and got.dtype == np.uint8
    assert frame_ids(got).tolist() == indices
    assert _mae(got, clip.frames[indices]) < TOL
    np.testing.assert_array_equal(got[0], got[3])  # a repeat is the same decoded frame
    # red square: R high, G and B low (catches BGR or a channel swap)
    assert got[:, 9:14, :, 0].max() > 200 and got[:, 9:14, :, 2].max() < 120


@pytest.mark.parametrize(("name", "codec", "decoder", "options"), CONTAINERS)
def test_iter_frames_yields_every_frame_and_agrees_with_read_frames(
    make_video, frame_ids, name, codec, decoder, options
):
    clip = make_video(name, 20, codec=codec, options=options)
    frames = list(iter_frames(clip.path))
    assert len(frames) == 20 and frames[0].shape == (24, 32, 3)
    everything = np.stack(frames)
    assert frame_ids(everything).tolist() == list(range(20))
    assert _mae(everything, clip.frames) < TOL
    np.testing.assert_array_equal(read_frames(clip.path, range(20)), everything)


# ----------------------------------------------------------------------------- resize, gray, odd sizes


def _block_mean(frames: np.ndarray, f: int) -> np.ndarray:
    t, h, w, c = frames.shape
    return frames.reshape(t, h // f, f, w // f, f, c).astype(np.float64).mean(axis=(2, 4))


def test_size_resizes_in_the_decoder_to_h_w(make_video, frame_ids):
    clip = make_video("clip.mp4", 20)
    got = read_frames(clip.path, [0, 5, 19], size=(12, 16))
    assert got.shape == (3, 12, 16, 3) and got.dtype == np.uint8
    assert frame_ids(got).tolist() == [0, 5, 19]
    assert _mae(got, _block_mean(clip.frames[[0, 5, 19]], 2)) < 12  # bilinear vs box: a little looser


@pytest.mark.parametrize("size", [(48, 64), (17, 33), (24, 12)])
def test_size_gives_any_requested_shape(make_video, frame_ids, size):
    clip = make_video("clip.mp4", 10)
    got = read_frames(clip.path, [2, 9], size=size)
    assert got.shape == (2, *size, 3)
    assert frame_ids(got).tolist() == [2, 9]
    streamed = np.stack(list(iter_frames(clip.path, size=size)))
    assert streamed.shape == (10, *size, 3)
    np.testing.assert_array_equal(streamed[[2, 9]], got)


def test_channels_1_gives_gray_luma(make_video, frame_ids):
    clip = make_video("clip.mp4", 20)
    gray = read_frames(clip.path, [1, 18], channels=1)
    assert gray.shape == (2, 24, 32, 1) and gray.dtype == np.uint8
    luma = clip.frames[[1, 18]].astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # BT.601
    assert _mae(gray[..., 0], luma) < TOL
    assert frame_ids(gray).tolist() == [1, 18]
    assert next(iter_frames(clip.path, channels=1)).shape == (24, 32, 1)
    small = read_frames(clip.path, [0], size=(12, 16), channels=1)
    assert small.shape == (1, 12, 16, 1)


def test_a_gray_video_decodes_to_equal_rgb_channels(make_video, frame_ids):
    clip = make_video("gray.mkv", 10, codec="ffv1", pix_fmt="gray")
    rgb = read_frames(clip.path, [0, 9])
    assert rgb.shape == (2, 24, 32, 3)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 1])
    np.testing.assert_array_equal(rgb[..., 1], rgb[..., 2])
    gray = read_frames(clip.path, [0, 9], channels=1)
    assert _mae(gray[..., 0], rgb[..., 0]) < 1.0
    assert frame_ids(gray).tolist() == [0, 9]


@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt"),
    [
        pytest.param("odd.avi", "mjpeg", None, id="mjpeg-yuvj420p"),
        pytest.param("odd.mkv", "libx264", "yuv444p", id="h264-yuv444p"),
    ],
)
def test_odd_resolution_33x17(make_video, frame_ids, name, codec, pix_fmt):
    """H.264 in yuv420p cannot encode an odd size, so odd sizes are tested with MJPEG and 4:4:4 H.264."""
    clip = make_video(name, 10, size=(17, 33), codec=codec, pix_fmt=pix_fmt)
    info = probe(clip.path)
    assert (info.width, info.height, info.frames) == (33, 17, 10)
    got = read_frames(clip.path, [9, 0, 4])
    assert got.shape == (3, 17, 33, 3)
    assert frame_ids(got).tolist() == [9, 0, 4]
    assert _mae(got, clip.frames[[9, 0, 4]]) < TOL
    assert read_frames(clip.path, [1], size=(9, 15)).shape == (1, 9, 15, 3)


# ----------------------------------------------------------------------------- seeking


class _CountingContainer:
    """Wraps a PyAV container and counts its seeks and the frames it decodes."""

    def __init__(self, container, log: dict[str, int]):
        self._c, self._log = container, log

    def __getattr__(self, name):
        return getattr(self._c, name)

    def seek(self, *args, **kwargs):
        self._log["seeks"] += 1
        return self._c.seek(*args, **kwargs)

    def decode(self, *args, **kwargs):
        for frame in self._c.decode(*args, **kwargs):
            self._log["decoded"] += 1
            yield frame


@pytest.fixture
def count_decoding(monkeypatch):
    log = {"seeks": 0, "decoded": 0}
    real_open = video_mod._open
    monkeypatch.setattr(video_mod, "_open", lambda path: _CountingContainer(real_open(path), log))
    return log


@pytest.fixture(scope="module")
def long_video(tmp_path_factory, coded):
    """300 coded frames, H.264 with a keyframe at least every 10 frames, and all of them decoded."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    write_video(path, coded(300), fps=25, options={"g": "10"})
    return path, probe(path), np.stack(list(iter_frames(path)))


def test_long_video_has_frequent_keyframes(long_video, frame_ids):
    _, info, everything = long_video
    assert info.frames == 300
    assert frame_ids(everything).tolist() == list(range(300))
    assert info.keyframes[0] == 0 and max(np.diff(info.keyframes)) <= 10 and info.keyframes[-1] >= 290


def test_seeking_gives_the_frames_of_a_sequential_decode(long_video, frame_ids, count_decoding):
    path, info, everything = long_video
    got = read_frames(path, [5, 250, 290], info=info)
    np.testing.assert_array_equal(got, everything[[5, 250, 290]])
    assert frame_ids(got).tolist() == [5, 250, 290]
    # it jumped: two seeks, and far fewer than 291 frames decoded
    assert count_decoding["seeks"] >= 2
    assert count_decoding["decoded"] < 40


def test_no_seek_for_a_contiguous_run_from_the_start(long_video, count_decoding):
    path, info, everything = long_video
    got = read_frames(path, range(8), info=info)
    np.testing.assert_array_equal(got, everything[:8])
    assert count_decoding["seeks"] == 0
    assert count_decoding["decoded"] <= 8 + 4  # a few frames of decoder delay at most


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 299), min_size=1, max_size=6))
def test_read_frames_equals_sequential_decode_for_any_indices(long_video, indices):
    path, info, everything = long_video
    np.testing.assert_array_equal(read_frames(path, indices, info=info), everything[indices])


@pytest.mark.parametrize(
    ("name", "codec", "options"),
    [
        pytest.param("long.mkv", None, {"g": "10"}, id="mkv"),
        pytest.param("long.webm", None, {"g": "10"}, id="webm"),
        pytest.param("long.avi", None, {"g": "10", "b": "1000000"}, id="avi-mpeg4"),
        pytest.param("long.mov", None, {"g": "10"}, id="mov"),
    ],
)
def test_seeking_in_other_containers_at_ntsc_rate(make_video, name, codec, options):
    clip = make_video(name, 120, fps=Fraction(30000, 1001), codec=codec, options=options)
    everything = np.stack(list(iter_frames(clip.path)))
    info = probe(clip.path)
    assert info.fps == pytest.approx(29.97, abs=0.01)
    for indices in ([100, 3, 57], [119], [64, 64, 12], [31, 32, 33, 90]):
        np.testing.assert_array_equal(read_frames(clip.path, indices, info=info), everything[indices])


def test_seeking_in_mpeg_ts(make_video):
    clip = make_video("clip.ts", 120, fps=25, options={"g": "10"})
    everything = np.stack(list(iter_frames(clip.path)))
    np.testing.assert_array_equal(read_frames(clip.path, [10]), everything[[10]])


def test_seeking_in_mpeg1_program_stream(make_video):
    clip = make_video("clip.mpeg", 120, fps=25, codec="mpeg1video", options={"g": "10"})
    everything = np.stack(list(iter_frames(clip.path)))
    np.testing.assert_array_equal(read_frames(clip.path, [55, 87]), everything[[55, 87]])


# ----------------------------------------------------------------------------- rotation


def _write_rotated(path: Path, frames: np.ndarray, degrees: int) -> Path:
    """An H.264 MP4 whose stream carries a display matrix (a phone's rotation flag) of ``degrees``."""
    import av

    container = av.open(str(path), "w")
    try:
        stream = container.add_stream("libx264", rate=10)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.set_display_rotation(degrees)
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return path


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_flag_is_honoured(tmp_path, degrees):
    stored = np.full((6, 24, 32, 3), 60, np.uint8)
    stored[:, :8, :8] = 255  # a bright top-left corner of the stored frame
    path = _write_rotated(tmp_path / f"rot{degrees}.mp4", stored, degrees)
    info = probe(path)
    assert info.rotation == degrees
    upright = np.rot90(stored, k=degrees // 90, axes=(1, 2))  # counterclockwise, FFmpeg's display matrix sense
    assert (info.height, info.width) == upright.shape[1:3]
    got = read_frames(path, [0, 5])
    assert got.shape == (2, *upright.shape[1:])
    assert _mae(got, upright[[0, 5]]) < TOL
    np.testing.assert_array_equal(next(iter_frames(path)), got[0])
    # size is the displayed (H, W), whatever the stored orientation
    resized = read_frames(path, [0], size=(40, 20))
    assert resized.shape == (1, 40, 20, 3)
    corner = np.unravel_index(np.argmax(resized[0].mean(-1)), (40, 20))
    expected = np.unravel_index(np.argmax(upright[0].mean(-1)), upright.shape[1:3])
    assert (corner[0] < 20) == (expected[0] < upright.shape[1] / 2)
    assert (corner[1] < 10) == (expected[1] < upright.shape[2] / 2)


# ----------------------------------------------------------------------------- broken files


BROKEN = ["corrupt", "truncated", "empty", "zero_frames", "audio_only", "text_as_mp4"]


@pytest.mark.parametrize("kind", [*BROKEN, "text"])
def test_every_broken_kind_raises_video_error_with_its_reason(bad_files, bad_reasons, kind):
    path = bad_files[kind]
    with pytest.raises(VideoError, match=bad_reasons[kind]) as e:
        probe(path)
    assert str(path) in str(e.value)
    with pytest.raises(VideoError, match=bad_reasons[kind]):
        read_frames(path, [0])


@pytest.mark.parametrize("kind", [k for k in BROKEN if k != "zero_frames"] + ["text"])
def test_iter_frames_raises_video_error_on_broken_files(bad_files, bad_reasons, kind):
    with pytest.raises(VideoError, match=bad_reasons[kind]):
        list(iter_frames(bad_files[kind]))


def test_iter_frames_of_a_zero_frame_video_yields_nothing(bad_files):
    assert list(iter_frames(bad_files["zero_frames"])) == []


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.mp4"
    for call in (lambda: probe(path), lambda: read_frames(path, [0]), lambda: list(iter_frames(path))):
        with pytest.raises(VideoError, match=r"nowhere\.mp4: no such file"):
            call()


def test_a_folder_is_not_a_video(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        probe(tmp_path)


def test_truncated_with_index_at_front_probes_but_fails_to_decode(tmp_path, truncated_faststart):
    path = truncated_faststart(tmp_path / "cut.mp4", n=30)
    info = probe(path)  # the index survives, so the probe sees the packets that remain
    assert 0 < info.frames < 30
    with pytest.raises(VideoError, match="corrupt or truncated"):
        read_frames(path, range(info.frames), info=info)
    with pytest.raises(VideoError, match="corrupt or truncated"):
        list(iter_frames(path))


@pytest.mark.parametrize("indices", [[20], [0, 25], [-1]])
def test_index_outside_the_video_raises(make_video, indices):
    clip = make_video("clip.mp4", 20)
    with pytest.raises(VideoError, match=r"frame indices must be in 0\.\.19"):
        read_frames(clip.path, indices)


def test_no_indices_or_bad_channels_raise(make_video):
    clip = make_video("clip.mp4", 5)
    with pytest.raises(VideoError, match="no frame indices"):
        read_frames(clip.path, [])
    with pytest.raises(CnnlstmError, match=r"channels must be 1 \(gray\) or 3 \(RGB\), got 2"):
        read_frames(clip.path, [0], channels=2)


def test_write_video_refuses_no_frames(tmp_path):
    with pytest.raises(VideoError, match="no frames to write"):
        write_video(tmp_path / "none.mp4", [])


def test_write_video_returns_the_path_and_follows_the_extension(tmp_path, coded):
    path = write_video(tmp_path / "x.webm", coded(3))
    assert path == tmp_path / "x.webm"
    assert probe(path).codec == "vp9"
