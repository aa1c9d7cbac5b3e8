"""Video decoding with PyAV (FFmpeg): probe, read sampled frames, iterate, write.

Frames are converted to RGB (or gray) and resized by FFmpeg's scaler inside ``reformat``,
never in a Python loop; the rotation flag of phone videos is honoured. Reading seeks to a
keyframe when one lies between the current position and the next wanted frame, which is
cheaper than decoding everything in between.

>>> info = probe("clip.mp4")                              # doctest: +SKIP
>>> read_frames("clip.mp4", [0, 5, 10], size=(64, 64)).shape  # doctest: +SKIP
(3, 64, 64, 3)
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import VideoError, require

__all__ = ["VIDEO_EXTENSIONS", "VideoInfo", "iter_frames", "probe", "read_frames", "write_video"]

VIDEO_EXTENSIONS = (
    ".mp4",
    ".m4v",
    ".mov",
    ".avi",
    ".mkv",
    ".webm",
    ".mpg",
    ".mpeg",
    ".ts",
    ".mts",
    ".m2ts",
    ".flv",
    ".wmv",
    ".3gp",
    ".ogv",
    ".mjpeg",
    ".mjpg",
    ".y4m",
    ".h264",
    ".hevc",
    ".gif",
)
_ENCODERS = {
    ".mp4": ("libx264", "yuv420p"),
    ".mov": ("libx264", "yuv420p"),
    ".mkv": ("libx264", "yuv420p"),
    ".avi": ("mpeg4", "yuv420p"),
    ".webm": ("libvpx-vp9", "yuv420p"),
}


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video without decoding it all.

    Attributes:
        frames: number of video frames (from the packets, not the header's guess).
        fps: average frame rate.
        width, height: the displayed size (after rotation).
        rotation: counterclockwise degrees to display the stored frames upright (0, 90, 180, 270).
        keyframes: frame indices of the keyframes, sorted.
        codec: the decoder's name.
    """

    path: str
    frames: int
    fps: float
    width: int
    height: int
    rotation: int
    keyframes: tuple[int, ...]
    codec: str

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.frames / self.fps if self.fps else 0.0


def _av():
    return require("av", "video", "decoding video")


def _open(path: str | Path):
    av = _av()
    p = Path(path)
    if not p.is_file():
        raise VideoError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise VideoError(f"{p}: empty file (0 bytes)")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"{p}: not a readable video ({_reason(e)})") from None
    if container.format.name == "tty":  # FFmpeg renders any text file as an "ANSI art" video
        container.close()
        raise VideoError(f"{p}: not a readable video (a text file, which FFmpeg would render as ANSI art)")
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
        container.close()
        raise VideoError(f"{p}: no video stream ({kinds})")
    return container


def _reason(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:200]


def _index(pts: int | None, start: int, time_base: float, fps: float) -> int | None:
    if pts is None or not fps:
        return None
    return round((pts - start) * time_base * fps)


def probe(path: str | Path) -> VideoInfo:
    """Learn a video's frame count, rate, size, rotation and keyframes by reading its packets.

    Demuxing costs a read of the file but no decoding; one frame is decoded to prove the
    stream decodes at all.

    Raises:
        VideoError: the file is missing, empty, corrupt, truncated, has no video stream or no frames.
    """
    av = _av()
    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        tb = float(stream.time_base or 0)
        start = stream.start_time or 0
        n = 0
        keys: list[int] = []
        pts_seen: list[int] = []
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if packet.is_keyframe:
                idx = _index(packet.pts, start, tb, fps)
                keys.append(n if idx is None else idx)
            if packet.pts is not None:
                pts_seen.append(packet.pts)
            n += 1
        if n == 0:
            raise VideoError(f"{path}: the video stream has no frames")
        container.seek(0)
        first = next(iter(container.decode(stream)), None)
        if first is None:
            raise VideoError(f"{path}: no frame decodes")
        rotation = int(first.rotation or 0) % 360
        w, h = first.width, first.height
        if rotation in (90, 270):
            w, h = h, w
        return VideoInfo(str(path), n, fps, w, h, rotation, tuple(sorted(set(keys))), stream.codec_context.name)
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as e:
        raise VideoError(f"{path}: corrupt or truncated ({_reason(e)})") from None
    finally:
        container.close()


_local = threading.local()


def _reformatter():
    """One FFmpeg scaler per thread: it caches its context, where ``frame.reformat`` builds one per call (5x slower)."""
    r = getattr(_local, "reformatter", None)
    if r is None:
        from av.video.reformatter import VideoReformatter

        r = _local.reformatter = VideoReformatter()
    return r


def _to_array(frame, size: tuple[int, int] | None, channels: int, rotation: int) -> np.ndarray:
    """One decoded frame → ``(H, W, C)`` uint8, resized by FFmpeg's scaler, displayed upright."""
    fmt = "rgb24" if channels == 3 else "gray"
    h, w = size if size is not None else (frame.height, frame.width)
    if size is not None and rotation in (90, 270):
        h, w = w, h  # scale the stored frame so that it is (H, W) once rotated
    arr = _reformatter().reformat(frame, width=w, height=h, format=fmt, interpolation="BILINEAR").to_ndarray()
    if arr.ndim == 2:
        arr = arr[:, :, None]  # (H, W, 1)
    if rotation:
        arr = np.rot90(arr, k=rotation // 90)
    return arr


class _SeekMiss(Exception):
    """A seek landed after the wanted frame."""


# containers whose seeking to a keyframe is frame-exact with FFmpeg (MPEG-TS and MPEG-PS are not:
# they land on a later keyframe or shift timestamps, so those files are decoded from the start)
_SEEKABLE = {"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi"}


def _decode(path, wanted: list[int], size, channels: int, info: VideoInfo, seek: bool) -> dict[int, np.ndarray]:
    """Decode the frames at the sorted indices ``wanted``, seeking to keyframes where that skips work."""
    av = _av()
    want = set(wanted)
    got: dict[int, np.ndarray] = {}
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        tb = float(stream.time_base or 0)
        start = stream.start_time or 0
        seek = seek and bool(tb) and container.format.name in _SEEKABLE
        frames = container.decode(stream)
        pos = -1  # index of the last decoded frame
        for target in wanted:
            if target in got:
                continue
            k = bisect.bisect_right(info.keyframes, target) - 1
            if seek and k >= 0 and info.keyframes[k] > (pos if pos is not None else -1) + 1:
                key = info.keyframes[k]
                container.seek(start + round(key / info.fps / tb), stream=stream, backward=True)
                frames = container.decode(stream)
                pos = None  # learnt from the next frame's pts
            for frame in frames:
                if pos is None:
                    idx = _index(frame.pts, start, tb, info.fps)
                    if idx is None or idx > target:
                        raise _SeekMiss
                    pos = idx
                else:
                    pos += 1
                if pos in want:
                    got[pos] = _to_array(frame, size, channels, info.rotation)
                if pos >= target:
                    break
            if target not in got:
                raise VideoError(f"{path}: truncated: ended at frame {pos} of {info.frames} before frame {target}")
    except (VideoError, _SeekMiss):
        raise
    except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as e:
        raise VideoError(f"{path}: corrupt or truncated ({_reason(e)})") from None
    finally:
        container.close()
    return got


def read_frames(
    path: str | Path,
    indices: Sequence[int],
    size: tuple[int, int] | None = None,
    channels: int = 3,
    info: VideoInfo | None = None,
) -> np.ndarray:
    """Decode the frames at ``indices`` (any order, repeats allowed).

    Args:
        path: the video file.
        indices: frame indices in ``0..frames-1``.
        size: ``(H, W)`` to resize to in the decoder; None keeps the stored size.
        channels: 3 (RGB) or 1 (gray).
        info: the file's :func:`probe` result, if known (saves a probe).

    Returns:
        ``(T, H, W, C)`` uint8, ``T = len(indices)``.

    Raises:
        VideoError: the file cannot be decoded, or ends before a wanted frame (truncated).
    """
    _av()  # the clear "install cnnlstm[video]" error before anything else
    if channels not in (1, 3):
        raise VideoError(f"channels must be 1 (gray) or 3 (RGB), got {channels}")
    info = info or probe(path)
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        raise VideoError(f"{path}: no frame indices asked for")
    if wanted[0] < 0 or wanted[-1] >= info.frames:
        raise VideoError(f"{path}: frame indices must be in 0..{info.frames - 1}, got {wanted[0]}..{wanted[-1]}")
    try:
        got = _decode(path, wanted, size, channels, info, seek=True)
    except _SeekMiss:  # the container's seeking is not frame-exact: decode from the start instead
        got = _decode(path, wanted, size, channels, info, seek=False)
    return np.stack([got[int(i)] for i in indices])  # (T, H, W, C)


def iter_frames(path: str | Path, size: tuple[int, int] | None = None, channels: int = 3) -> Iterator[np.ndarray]:
    """Yield every frame, ``(H, W, C)`` uint8, one at a time (memory stays flat).

    Raises:
        VideoError: the file cannot be opened or decoding breaks off.
    """
    av = _av()
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        for frame in container.decode(stream):
            yield _to_array(frame, size, channels, int(frame.rotation or 0) % 360)
    except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as e:
        raise VideoError(f"{path}: corrupt or truncated ({_reason(e)})") from None
    finally:
        container.close()


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: int = 25,
    codec: str | None = None,
    pix_fmt: str | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode ``(H, W, 3)`` uint8 RGB frames (an array ``(T, H, W, 3)`` or any iterable) to a file.

    The container follows the extension; the codec defaults to H.264 for ``.mp4/.mov/.mkv``,
    MPEG-4 for ``.avi`` and VP9 for ``.webm`` (``codec="mjpeg"`` for Motion JPEG).

    Returns:
        The path written.
    """
    av = _av()
    path = Path(path)
    default_codec, default_fmt = _ENCODERS.get(path.suffix.lower(), ("libx264", "yuv420p"))
    codec = codec or default_codec
    pix_fmt = pix_fmt or ("yuvj420p" if codec == "mjpeg" else default_fmt)
    container = av.open(str(path), "w")
    try:
        stream = None
        for arr in frames:
            arr = np.ascontiguousarray(arr, dtype=np.uint8)
            if stream is None:
                stream = container.add_stream(codec, rate=fps)
                stream.height, stream.width = arr.shape[:2]
                stream.pix_fmt = pix_fmt
                if options:
                    stream.options = dict(options)
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        if stream is None:
            raise VideoError(f"{path}: no frames to write")
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return path
