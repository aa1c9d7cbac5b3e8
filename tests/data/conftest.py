"""Tiny videos the data tests write for themselves, and one file of each broken kind.

The helpers reach the tests as fixtures (``coded``, ``frame_ids``, ``make_video``, ``bad_files``,
``write_bad_files``, ``truncated_faststart``): a ``from conftest import`` would be ambiguous, another
test folder has its own ``conftest.py`` and neither is a package.

Every frame carries its own index: the top third of the frame is gray ``16 + 12 * (t % 16)``
and the bottom third gray ``16 + 12 * (t // 16)``, so ``frame_ids`` reads back which frame
a decoder returned (up to 304 frames, within a codec error of +-6 levels). A red square moves
along the middle third so that motion, colour order and resizing are visible too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cnnlstm.data import write_video

# --doctest-modules would import this file as a module named "conftest", which clashes with
# tests/train/conftest.py when both folders are named on the command line; it has no doctests.
collect_ignore = ["conftest.py"]

H, W = 24, 32  # the default frame size: tiny, and even (yuv420p needs even sizes for H.264)


def coded_frames(n: int, h: int = H, w: int = W) -> np.ndarray:
    """``(n, h, w, 3)`` uint8 frames that encode their own index (see the module docstring)."""
    out = np.zeros((n, h, w, 3), np.uint8)
    band = h // 3
    for t in range(n):
        out[t, :band] = 16 + 12 * (t % 16)
        out[t, h - band :] = 16 + 12 * (t // 16)
        x = (3 * t) % max(1, w - 6)
        out[t, band + 1 : band + 7, x : x + 6] = (255, 40, 40)
    return out


def read_ids(frames: np.ndarray) -> np.ndarray:
    """The frame index each of ``(T, H, W, C)`` frames encodes, read from its two gray bands: ``(T,)``."""
    frames = np.asarray(frames, dtype=np.float64)
    h = frames.shape[1]
    band = h // 3
    top = frames[:, 1 : band - 1].mean(axis=(1, 2, 3))
    bottom = frames[:, h - band + 1 : h - 1].mean(axis=(1, 2, 3))
    return (np.round((top - 16) / 12) + 16 * np.round((bottom - 16) / 12)).astype(int)


@dataclass
class Clip:
    """A video written by a test and the frames it was written from."""

    path: Path
    frames: np.ndarray  # (T, H, W, 3) uint8


@pytest.fixture
def make_video(tmp_path):
    """``make_video(name, n=20, ...)`` writes ``n`` coded frames to ``tmp_path/name`` and returns a :class:`Clip`."""

    def make(
        name: str | Path = "clip.mp4",
        n: int = 20,
        *,
        size: tuple[int, int] = (H, W),
        fps=10,
        codec: str | None = None,
        pix_fmt: str | None = None,
        options: dict[str, str] | None = None,
    ) -> Clip:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        frames = coded_frames(n, *size)
        write_video(path, frames, fps=fps, codec=codec, pix_fmt=pix_fmt, options=options)
        return Clip(path, frames)

    return make


def _write_audio_only(path: Path) -> Path:
    """An AAC stream and nothing else, in an MP4 container."""
    import av

    container = av.open(str(path), "w", format="mp4")
    try:
        stream = container.add_stream("aac", rate=16000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return path


def _write_zero_frames(path: Path) -> Path:
    """An AVI whose header declares an MPEG-4 video stream, with not one frame in it."""
    import av

    container = av.open(str(path), "w")
    try:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height = W, H
        stream.pix_fmt = "yuv420p"
        container.start_encoding()  # writes the header, though no packet follows
    finally:
        container.close()
    return path


def _write_truncated_faststart(path: Path, n: int = 30) -> Path:
    """An H.264 MP4 with its index (moov) at the front, cut to half its bytes.

    It opens and probes (the index lists the packets that remain) but decoding breaks off
    in the last, cut packet: the file that passes the probe and fails at load.
    """
    import av

    frames = np.random.default_rng(0).integers(0, 256, (n, H, W, 3), dtype=np.uint8)
    container = av.open(str(path), "w", options={"movflags": "faststart"})
    try:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height = W, H
        stream.pix_fmt = "yuv420p"
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# kind -> (file name, the reason the probe gives, as a regex)
BAD_KINDS = {
    "corrupt": ("corrupt.mp4", r"not a readable video"),
    "truncated": ("truncated.mp4", r"not a readable video"),
    "empty": ("empty.mp4", r"empty file \(0 bytes\)"),
    "zero_frames": ("zero_frames.avi", r"has no frames"),
    "audio_only": ("audio_only.mp4", r"no video stream \(audio\)"),
    "text_as_mp4": ("text.mp4", r"not a readable video"),
    "text": ("notes.txt", r"not a (readable )?video"),  # indexing refuses the extension; probe, the tty demuxer
}


def _write_bad_files(folder: Path) -> dict[str, Path]:
    """One file of each broken kind of :data:`BAD_KINDS` in ``folder``: ``{kind: path}``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {kind: folder / name for kind, (name, _) in BAD_KINDS.items()}
    paths["corrupt"].write_bytes(np.random.default_rng(1).bytes(4000))
    good = write_video(folder / "whole.tmp.mp4", coded_frames(20), fps=10)  # moov at the end: half has no index
    data = good.read_bytes()
    paths["truncated"].write_bytes(data[: len(data) // 2])
    good.unlink()
    paths["empty"].write_bytes(b"")
    _write_zero_frames(paths["zero_frames"])
    _write_audio_only(paths["audio_only"])
    paths["text_as_mp4"].write_text("path,label\nnot a video at all\n" * 20)
    paths["text"].write_text("path,label\nnot a video at all\n" * 20)
    return paths


@pytest.fixture(scope="session")
def coded():
    """:func:`coded_frames`: ``coded(n, h=24, w=32)`` -> ``(n, h, w, 3)`` uint8 frames that encode their index."""
    return coded_frames


@pytest.fixture(scope="session")
def frame_ids():
    """``frame_ids(frames)`` -> the index each decoded ``(T, H, W, C)`` frame encodes, ``(T,)`` int."""
    return read_ids


@pytest.fixture(scope="session")
def write_bad_files():
    """``write_bad_files(folder)`` -> ``{kind: path}``, one file of each kind of :data:`BAD_KINDS`."""
    return _write_bad_files


@pytest.fixture(scope="session")
def bad_reasons() -> dict[str, str]:
    """``{kind: regex}``: the reason the probe gives for each broken kind."""
    return {kind: reason for kind, (_, reason) in BAD_KINDS.items()}


@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    """One file of each broken kind in ``tmp_path/bad``: ``{kind: path}``."""
    return _write_bad_files(tmp_path / "bad")


@pytest.fixture(scope="session")
def truncated_faststart():
    """``truncated_faststart(path, n=30)``: an MP4 that passes the probe and fails at load (see the writer)."""
    return _write_truncated_faststart
