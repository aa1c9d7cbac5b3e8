"""The demo's "moving digits" videos: real handwritten digits (scikit-learn's, no download) in motion.

Eight classes, each a direction of motion in one half of the frame::

    right-top, left-top, right-bottom, left-bottom, down-left, up-left, down-right, up-right

The label depends on the order of the frames (a clip played backwards belongs to the opposite
direction) and on where the digit is (top or bottom, left or right half); the digit itself,
its size, speed, start, the video's length and resolution vary and carry no label. Files are
written as H.264 MP4 through :func:`cnnlstm.data.write_video`, the path users' videos take.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import require
from .video import write_video

__all__ = [
    "ANOMALIES",
    "CLASSES",
    "make_anomaly_videos",
    "make_moving_digits",
    "moving_digit_frames",
    "write_class_videos",
]

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

    def render(split: str, label: str, rng: np.random.Generator, frames: int, h: int, w: int) -> np.ndarray:
        digit = digits[int(rng.choice(pools[split]))]
        return moving_digit_frames(label, digit, rng, frames, h, w)

    write_class_videos(root, {"train": train_per_class, "test": test_per_class}, list(CLASSES), render, rng,
                       sizes, lengths, progress)  # fmt: skip
    return root


def write_class_videos(
    root: Path,
    per_class: dict[str, int],
    classes: list[str],
    render: Callable[[str, str, np.random.Generator, int, int, int], np.ndarray],
    rng: np.random.Generator,
    sizes: tuple[tuple[int, int], ...],
    lengths: tuple[int, int],
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``root/SPLIT/CLASS/NNNN.mp4`` (H.264): ``per_class[SPLIT]`` videos of each class, each of a size
    ``(H, W)`` drawn from ``sizes`` and a length drawn from ``lengths``, its frames
    ``render(split, label, rng, frames, H, W) -> (T, H, W, 3)`` uint8."""
    total, done = len(classes) * sum(per_class.values()), 0
    for split, n in per_class.items():
        for label in classes:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = sizes[int(rng.integers(len(sizes)))]
                frames = int(rng.integers(lengths[0], lengths[1] + 1))
                write_video(folder / f"{i:04d}.mp4", render(split, label, rng, frames, h, w), fps=25)
                done += 1
                if progress is not None:
                    progress(done, total)
    return root


ANOMALIES = ("jump", "freeze", "reverse", "novel")


def _novel_sprite() -> np.ndarray:
    """An 8x8 hollow square with a cross: a shape no digit looks like."""
    s = np.zeros((8, 8), np.float32)
    s[0, :] = s[-1, :] = s[:, 0] = s[:, -1] = 255.0
    np.fill_diagonal(s, 255.0)
    np.fill_diagonal(s[:, ::-1], 255.0)
    return s


def make_anomaly_videos(root: str | Path, normal_train: int = 480, normal_test: int = 40, per_anomaly: int = 10,
                        seed: int = 0, size: tuple[int, int] = (64, 64), frames: int = 24) -> Path:
    """The built-in anomaly set: smooth moving digits are normal; a sudden jump, a freeze, a reversal
    mid-clip, and an object that never appears in training are anomalies.

    Writes ``root/train/normal/*.mp4`` (normal only), ``root/test/normal/*.mp4`` and
    ``root/test/anomaly/KIND_NNNN.mp4``. Returns ``root``.
    """
    root = Path(root)
    digits = _digits()
    rng = np.random.default_rng(seed)
    names = list(CLASSES)
    h, w = size

    def write(folder: Path, name: str, anomaly: str | None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        sprite = _novel_sprite() if anomaly == "novel" else digits[int(rng.integers(len(digits)))]
        motion = None if anomaly == "novel" else anomaly
        label = names[int(rng.integers(len(names)))]
        write_video(folder / name, moving_digit_frames(label, sprite, rng, frames, h, w, anomaly=motion), fps=25)

    for i in range(normal_train):
        write(root / "train" / "normal", f"{i:04d}.mp4", None)
    for i in range(normal_test):
        write(root / "test" / "normal", f"{i:04d}.mp4", None)
    for kind in ANOMALIES:
        for i in range(per_anomaly):
            write(root / "test" / "anomaly", f"{kind}_{i:04d}.mp4", kind)
    return root


def injected_anomaly_series(length: int = 4000, seed: int = 0, every: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """A noisy two-period sine with anomalies injected after its first quarter: spikes, level shifts, flat-lines.

    Returns:
        ``(values (length, 1), labels (length,))``; labels are 1 on injected steps. The first quarter is clean
        (to train on); one anomaly starts every ``every`` steps after it, cycling through the three kinds.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    v = np.sin(2 * np.pi * t / 50) + 0.5 * np.sin(2 * np.pi * t / 13) + rng.normal(0, 0.1, length)
    labels = np.zeros(length, np.int64)
    kinds = ("spike", "level", "flat")
    for k, start in enumerate(range(length // 4 + every // 2, length - 40, every)):
        kind = kinds[k % 3]
        if kind == "spike":
            v[start] += rng.choice([-1, 1]) * rng.uniform(3, 5)
            labels[start] = 1
        elif kind == "level":
            v[start : start + 30] += rng.choice([-1, 1]) * rng.uniform(1.5, 2.5)
            labels[start : start + 30] = 1
        else:
            v[start : start + 30] = v[start]
            labels[start : start + 30] = 1
    return v.astype(np.float32)[:, None], labels
