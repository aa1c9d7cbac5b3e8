"""Which frames of a video make a clip of ``T`` frames.

- ``uniform``: ``T`` frames spread over the whole video, the middle of ``T`` equal segments
  (the default for classification). A video shorter than ``T`` repeats frames.
- ``random``: a contiguous clip, every ``stride``-th frame from a random start (training).
  Where the video is too short for the stride, the stride shrinks; shorter than ``T``,
  the clip is padded by the ``pad`` policy.
- ``dense``: sliding windows of ``T`` frames (every ``stride``-th) that cover the whole video,
  for evaluation; the scores are averaged over the windows.

Padding (``pad``) for a video shorter than ``T`` frames: ``"repeat"`` repeats the last frame
(the clip keeps ``T`` frames); ``"lengths"`` returns only the real frames, and the collate
function pads the batch and passes ``lengths`` to the model, which skips the padding.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

__all__ = ["PADS", "SAMPLINGS", "dense_windows", "random_indices", "sample", "uniform_indices"]

SAMPLINGS = ("uniform", "random", "dense")
PADS = ("repeat", "lengths")


def _check(frames: int, t: int, stride: int = 1, pad: str = "repeat") -> None:
    if pad not in PADS:
        raise ConfigError(f"unknown pad policy {pad!r}: expected one of {', '.join(PADS)}")
    if frames < 1:
        raise ConfigError(f"a video needs at least one frame, got {frames}")
    if t < 1 or stride < 1:
        raise ConfigError(f"clip length T and stride must be positive, got T={t}, stride={stride}")


def _pad(idx: np.ndarray, t: int, pad: str) -> np.ndarray:
    if len(idx) >= t or pad == "lengths":
        return idx
    if pad != "repeat":
        raise ConfigError(f"unknown pad policy {pad!r}: expected one of {', '.join(PADS)}")
    return np.concatenate([idx, np.full(t - len(idx), idx[-1], dtype=idx.dtype)])


def uniform_indices(frames: int, t: int, pad: str = "repeat", offset: float = 0.5) -> np.ndarray:
    """The middle frame of each of ``T`` equal segments of the video (``offset`` 0.5; training jitters it in
    ``[0, 1)``: the same place in every segment, so the frames stay evenly spaced).

    >>> uniform_indices(100, 4).tolist()
    [12, 37, 62, 87]
    >>> uniform_indices(3, 5).tolist()  # shorter than T: frames repeat
    [0, 0, 1, 2, 2]
    >>> uniform_indices(3, 5, pad="lengths").tolist()
    [0, 1, 2]
    """
    _check(frames, t, pad=pad)
    if frames < t and pad == "lengths":
        return np.arange(frames)
    return np.minimum(np.floor((np.arange(t) + offset) * frames / t), frames - 1).astype(np.int64)


def random_indices(
    frames: int, t: int, stride: int = 1, rng: np.random.Generator | None = None, pad: str = "repeat"
) -> np.ndarray:
    """A contiguous clip: ``T`` frames ``stride`` apart from a random start.

    >>> random_indices(100, 4, stride=2, rng=np.random.default_rng(0)).tolist()
    [79, 81, 83, 85]
    """
    _check(frames, t, stride, pad)
    rng = rng or np.random.default_rng()
    if frames < t:
        return _pad(np.arange(frames), t, pad)
    stride = min(stride, (frames - 1) // (t - 1)) if t > 1 else 1
    span = (t - 1) * stride + 1
    start = int(rng.integers(0, frames - span + 1))
    return start + stride * np.arange(t)


def dense_windows(frames: int, t: int, stride: int = 1, overlap: float = 0.0, pad: str = "repeat") -> list[np.ndarray]:
    """Windows of ``T`` frames, ``stride`` apart, that cover every frame of the video.

    Windows start every ``(1 - overlap) * span`` frames; the last one ends at the last frame.

    >>> [w.tolist() for w in dense_windows(10, 4)]
    [[0, 1, 2, 3], [4, 5, 6, 7], [6, 7, 8, 9]]
    """
    _check(frames, t, stride, pad)
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
    if frames < t:
        return [_pad(np.arange(frames), t, pad)]
    if t > 1:
        stride = min(stride, (frames - 1) // (t - 1))  # a video too short for the stride: frames closer together
    span = (t - 1) * stride + 1
    hop = max(1, int(round(span * (1.0 - overlap))))
    starts = list(range(0, frames - span + 1, hop))
    if starts[-1] != frames - span:
        starts.append(frames - span)
    return [s + stride * np.arange(t) for s in starts]


def sample(
    frames: int,
    t: int,
    how: str = "uniform",
    stride: int = 1,
    rng: np.random.Generator | None = None,
    pad: str = "repeat",
    jitter: bool = False,
) -> list[np.ndarray]:
    """One or more index arrays for a video of ``frames`` frames, by sampling strategy ``how``; ``jitter``
    (training) draws ``uniform``'s place in each segment from ``rng``.

    Returns:
        A list of index arrays: one for ``uniform`` and ``random``, one per window for ``dense``.
    """
    if how == "uniform":
        offset = float((rng or np.random.default_rng()).uniform(0.0, 1.0)) if jitter else 0.5
        return [uniform_indices(frames, t, pad, offset)]
    if how == "random":
        return [random_indices(frames, t, stride, rng, pad)]
    if how == "dense":
        return dense_windows(frames, t, stride, pad=pad)
    raise ConfigError(f"unknown sampling {how!r}: expected one of {', '.join(SAMPLINGS)}")
