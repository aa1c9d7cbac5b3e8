"""The demo's "moving digits" videos: real handwritten digits (scikit-learn's, no download) in motion.

Eight classes, each a direction of motion in one half of the frame::

    right-top, left-top, right-bottom, left-bottom, down-left, up-left, down-right, up-right

The label depends on the order of the frames (a clip played backwards belongs to the opposite
direction) and on where the digit is (top or bottom, left or right half); the digit itself,
its size, speed, start, the video's length and resolution vary and carry no label. Files are
written as H.264 MP4 through :func:`cnnlstm.data.write_video`, the path users' videos take.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import require
from .video import write_video

__all__ = ["CLASSES", "make_moving_digits", "moving_digit_frames"]

# (axis of motion, direction, which half): axis 0 = horizontal, 1 = vertical
CLASSES = {
    "right-top": ("x", +1, "top"),
    "left-top": ("x", -1, "top"),
    "right-bottom": ("x", +1, "bottom"),
    "left-bottom": ("x", -1, "bottom"),
    "down-left": ("y", +1, "left"),
    "up-left": ("y", -1, "left"),
    "down-right": ("y", +1, "right"),
    "up-right": ("y", -1, "right"),
}


def _digits() -> np.ndarray:
    datasets = require("sklearn.datasets", "train", "the moving-digits demo data")
    images = datasets.load_digits().images  # (1797, 8, 8), values 0..16
    return (images / 16.0 * 255.0).astype(np.float32)


def moving_digit_frames(
    label: str,
    digit: np.ndarray,
    rng: np.random.Generator,
    frames: int = 24,
    height: int = 64,
    width: int = 64,
    anomaly: str | None = None,
) -> np.ndarray:
    """Render one video of a digit moving as class ``label`` says.

    Args:
        label: one of :data:`CLASSES`.
        digit: an ``(8, 8)`` float image, 0..255.
        rng: random numbers for size, speed, start and noise.
        frames, height, width: the video's length and size.
        anomaly: for anomaly data sets: ``"jump"`` (teleports mid-clip), ``"freeze"`` (stops
            mid-clip), ``"reverse"`` (turns back mid-clip); None for a normal motion.

    Returns:
        ``(frames, height, width, 3)`` uint8 RGB.
    """
    axis, sign, half = CLASSES[label]
    scale = int(rng.integers(2, 4)) * max(1, min(height, width) // 64)
    sprite = np.kron(digit, np.ones((scale, scale), np.float32))  # (8s, 8s)
    sh, sw = sprite.shape
    travel_x, travel_y = width - sw, height - sh
    # position along the motion axis goes from one edge to the other; the other axis stays in its half
    margin = 0.1
    a0, a1 = rng.uniform(0.0, margin), rng.uniform(1.0 - margin, 1.0)
    if sign < 0:
        a0, a1 = 1.0 - a0, 1.0 - a1
    along = np.linspace(a0, a1, frames)
    if anomaly == "jump":
        k = frames // 2
        along[k:] = np.clip(along[k:] + sign * 0.35, 0, 1)
    elif anomaly == "freeze":
        along[frames // 2 :] = along[frames // 2]
    elif anomaly == "reverse":
        k = frames // 2
        along[k:] = along[k] - (along[k:] - along[k])
    across = rng.uniform(0.05, 0.35) if half in ("top", "left") else rng.uniform(0.65, 0.95)
    canvas_bg = rng.uniform(0, 40) + rng.normal(0, 6, size=(height, width)).astype(np.float32)
    tint = rng.uniform(0.6, 1.0, size=3).astype(np.float32)
    video = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        fx, fy = (along[t], across) if axis == "x" else (across, along[t])
        x, y = int(round(fx * travel_x)), int(round(fy * travel_y))
        img = canvas_bg.copy()
        img[y : y + sh, x : x + sw] = np.maximum(img[y : y + sh, x : x + sw], sprite)
        img += rng.normal(0, 4, size=img.shape)
        video[t] = np.clip(img[:, :, None] * tint, 0, 255).astype(np.uint8)
    return video


def make_moving_digits(
    root: str | Path,
    train_per_class: int = 40,
    test_per_class: int = 15,
    seed: int = 0,
    sizes: tuple[tuple[int, int], ...] = ((64, 64), (72, 96), (96, 72)),
    lengths: tuple[int, int] = (16, 40),
    progress=None,
) -> Path:
    """Write the moving-digits data set as ``root/train|test/CLASS/NNNN.mp4``.

    Train and test use disjoint digit images. Returns ``root``.

    Args:
        root: output folder.
        train_per_class, test_per_class: videos per class in each split.
        seed: everything is drawn from it.
        sizes: ``(H, W)`` resolutions, chosen at random per video.
        lengths: the range of frames per video.
        progress: optional callable ``progress(done, total)``.
    """
    root = Path(root)
    digits = _digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits))
    pools = {"train": order[: len(order) * 3 // 4], "test": order[len(order) * 3 // 4 :]}
    total = len(CLASSES) * (train_per_class + test_per_class)
    done = 0
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        for label in CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                h, w = sizes[int(rng.integers(len(sizes)))]
                n = int(rng.integers(lengths[0], lengths[1] + 1))
                digit = digits[int(rng.choice(pools[split]))]
                write_video(folder / f"{i:04d}.mp4", moving_digit_frames(label, digit, rng, n, h, w), fps=25)
                done += 1
                if progress is not None:
                    progress(done, total)
    return root
