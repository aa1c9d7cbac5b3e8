"""The video suite: tasks whose label is how things move, built from real images that packages ship, to choose
defaults on (their mean and their worst task) rather than on the demo alone.

Run: python bench/video_suite.py [--tasks a,b] [--configs x,y] [--seeds 3] [--train-videos 240] [--data DIR]

Images: scikit-learn's two photos (china.jpg, flower.jpg) and its handwritten digits; no download. Every video is
written through PyAV as H.264 (``cnnlstm.data.write_video``, the path users' videos take) into
``ROOT/TASK/train|test/CLASS/NNNN.mp4``, at a frame size drawn from three and a length from 20-40 frames. Tasks
(half have classes that are each other's time reversal, marked R):

- translate (R): a photo patch moves left / right / up / down over another photo;
- rotate (R): a patch turns clockwise / counter-clockwise;
- zoom (R): the camera zooms in / out on a photo;
- speed: a patch moves slowly / at medium speed / fast, in a random direction;
- which-moves: of two patches, the left or the right one moves;
- periodic: a patch moves back and forth, or one way;
- digit-direction (R): which digit (0 or 1) and which way it moves (left / right): 4 classes, both needed;
- pan-vs-object: the camera pans over a scene with a patch in it, or the patch moves over a still scene.

Each configuration trains ``cnnlstm.tasks.entry.train`` (what ``cnnlstm train`` runs) with only its own options,
and ``cnnlstm.apps.evaluate.evaluate`` scores it on the task's test split: accuracy, macro-F1, training seconds.
Writes ``results/video_suite.json`` and ``results/video_suite.md`` (tasks x configurations, mean over seeds,
the mean over tasks and the worst task).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, machine, save

SIZES = ((64, 64), (72, 96), (96, 72))  # (H, W)
LENGTHS = (20, 40)

# configurations: the options given to the library, as a user would give them on the command line
CONFIGS: dict[str, dict] = {
    # the library's defaults, given only the data and --out (cnnlstm.build's "video" preset, ClipSpec, VIDEO_TRAINING)
    "default": {},
    # the same without early stopping: all 30 epochs, the epoch of the lowest validation loss kept (to measure patience)
    "default-full": {"options": {"patience": 0}},
    # the defaults before the suite: gap bridge, no motion input, 16 frames of 112x112, 10 epochs, no augmentation
    "old-default": {
        "model": {"bridge": "gap", "motion": "none"},
        "clip": {"clip_len": 16, "size": (112, 112)},
        "options": {"epochs": 10, "patience": 0, "augment": False, "schedule": "cosine"},
    },
    # the library's model with the grid bridge, on the demo's short low-resolution clips
    "grid-8x64": {"model": {"bridge": "grid"}, "clip": {"clip_len": 8, "size": (64, 64)}},
    # the same trained until the validation loss stops improving
    "grid-8x64-long": {
        "model": {"bridge": "grid"},
        "clip": {"clip_len": 8, "size": (64, 64)},
        "options": {"epochs": 30, "patience": 6},
    },
    # frame differences beside the frames (before the suite's other defaults were chosen; 50 videos a class)
    "stack-long": {"model": {"bridge": "grid", "motion": "stack"}, "clip": {"clip_len": 8, "size": (64, 64)},
                   "options": {"epochs": 30, "patience": 6}},
    # and motion-keeping augmentation with a warm-up
    "stack-aug": {"model": {"bridge": "grid", "motion": "stack"}, "clip": {"clip_len": 8, "size": (64, 64)},
                  "options": {"epochs": 30, "patience": 6, "augment": True, "schedule": "warmup-cosine"}},
    # the defaults without the motion input (the frames alone)
    "no-motion": {"model": {"motion": "none"}},
    # the defaults with a ConvLSTM over the backbone's maps (its state keeps where things are), then the grid bridge
    "convlstm": {"model": {"rnn": "convlstm", "hidden_size": 64}},
    # one change to the defaults at a time (issue 17's list): the RNN, the backbone's width, the clip's length, the
    # learning-rate schedule, weight decay, augmentation
    "gru": {"model": {"rnn": "gru"}},
    "narrow": {"model": {"backbone_channels": (16, 32, 64, 128)}},
    "frames-16": {"clip": {"clip_len": 16}},
    "onecycle": {"options": {"schedule": "onecycle"}},
    "no-decay": {"options": {"weight_decay": 0.0}},
    "no-augment": {"options": {"augment": False}},
    "demo-model": {
        "model": {"backbone_channels": (16, 32, 64), "bridge": "grid", "hidden_size": 64},
        "clip": {"clip_len": 8, "size": (48, 48)},
        "options": {"batch_size": 16, "lr": 3e-3},
    },
}


# ----------------------------------------------------------------------------- images and rendering


def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [img.astype(np.float32) for img in load_sample_images().images]  # (427, 640, 3) each, 0..255


def _digits() -> dict[int, list[np.ndarray]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    out: dict[int, list[np.ndarray]] = {}
    for img, y in zip(d.images, d.target):
        out.setdefault(int(y), []).append(np.repeat((img / 16.0 * 255.0)[:, :, None], 3, axis=2).astype(np.float32))
    return out


def _sample(img: np.ndarray, cy: float, cx: float, h: int, w: int, scale: float = 1.0, angle: float = 0.0):
    """The ``(h, w, 3)`` view of ``img`` centred at (cy, cx), ``scale`` source pixels per output pixel, turned by
    ``angle`` radians (bilinear, edges clamped)."""
    from scipy.ndimage import map_coordinates

    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ys, xs = (ys - h / 2) * scale, (xs - w / 2) * scale
    c, s = np.cos(angle), np.sin(angle)
    sy, sx = cy + c * ys - s * xs, cx + s * ys + c * xs
    return np.stack([map_coordinates(img[:, :, k], [sy, sx], order=1, mode="nearest") for k in range(3)], axis=2)


class Scene:
    """One video's canvas: a background view of a photo and patches pasted over it, frame by frame."""

    def __init__(self, rng: np.random.Generator, photos: list[np.ndarray], h: int, w: int, frames: int, digits=None):
        self.rng, self.h, self.w, self.t, self.digits = rng, h, w, frames, digits
        self.bg, self.fg = (photos[0], photos[1]) if rng.random() < 0.5 else (photos[1], photos[0])
        self.cy = rng.uniform(0.3, 0.7) * self.bg.shape[0]
        self.cx = rng.uniform(0.3, 0.7) * self.bg.shape[1]
        self.scale = rng.uniform(1.5, 2.5)
        self.py = rng.uniform(0.25, 0.75) * self.fg.shape[0]  # where the patches are cut from the other photo
        self.px = rng.uniform(0.25, 0.75) * self.fg.shape[1]

    def background(self, dy: float = 0.0, dx: float = 0.0, zoom: float = 1.0) -> np.ndarray:
        return _sample(self.bg, self.cy + dy * self.scale, self.cx + dx * self.scale, self.h, self.w, self.scale / zoom)

    def patch(self, size: int, angle: float = 0.0, source: np.ndarray | None = None) -> np.ndarray:
        src = self.fg if source is None else source
        if source is None:
            return _sample(src, self.py, self.px, size, size, 1.2, angle)
        return _sample(src, src.shape[0] / 2 - 0.5, src.shape[1] / 2 - 0.5, size, size, src.shape[0] / size, angle)

    def paste(self, frame: np.ndarray, patch: np.ndarray, y: float, x: float) -> np.ndarray:
        """``patch`` with its centre at (y, x) in fractions of the frame, clipped to the frame, with a dark border."""
        ph, pw = patch.shape[:2]
        y0, x0 = int(round(y * self.h - ph / 2)), int(round(x * self.w - pw / 2))
        out = frame.copy()
        ya, yb, xa, xb = max(0, y0), min(self.h, y0 + ph), max(0, x0), min(self.w, x0 + pw)
        if ya < yb and xa < xb:
            out[ya:yb, xa:xb] = 20.0
            inner = patch[ya - y0 + 1 : yb - y0 - 1, xa - x0 + 1 : xb - x0 - 1]
            out[ya + 1 : ya + 1 + inner.shape[0], xa + 1 : xa + 1 + inner.shape[1]] = inner
        return out

    def video(self, frames: list[np.ndarray]) -> np.ndarray:
        noise = self.rng.normal(0, 3, size=(len(frames), self.h, self.w, 1))
        return np.clip(np.stack(frames) + noise, 0, 255).astype(np.uint8)  # (T, H, W, 3)


def _path(rng: np.random.Generator, frames: int, direction: tuple[float, float], speed: float):
    """Positions (fractions of the frame) of a patch crossing the frame along ``direction`` at ``speed``."""
    dy, dx = direction
    start = np.array([0.5 - dy * speed * frames / 2, 0.5 - dx * speed * frames / 2]) + rng.uniform(-0.08, 0.08, 2)
    return [start + np.array([dy, dx]) * speed * t for t in range(frames)]


DIRECTIONS = {"left": (0.0, -1.0), "right": (0.0, 1.0), "up": (-1.0, 0.0), "down": (1.0, 0.0)}


def translate(s: Scene, label: str) -> np.ndarray:
    size = int(min(s.h, s.w) * s.rng.uniform(0.3, 0.4))
    patch, bg = s.patch(size), s.background()
    speed = s.rng.uniform(0.4, 0.6) / s.t
    return s.video([s.paste(bg, patch, *p) for p in _path(s.rng, s.t, DIRECTIONS[label], speed)])


def rotate(s: Scene, label: str) -> np.ndarray:
    size = int(min(s.h, s.w) * 0.5)
    sign = 1 if label == "clockwise" else -1
    bg, a0, turn = s.background(), s.rng.uniform(0, 2 * np.pi), s.rng.uniform(0.8, 1.6)
    y, x = s.rng.uniform(0.4, 0.6, 2)
    return s.video([s.paste(bg, s.patch(size, a0 + sign * turn * t / s.t), y, x) for t in range(s.t)])


def zoom(s: Scene, label: str) -> np.ndarray:
    k = s.rng.uniform(1.6, 2.4)
    zs = np.geomspace(1.0, k, s.t) if label == "in" else np.geomspace(k, 1.0, s.t)
    return s.video([s.background(zoom=z) for z in zs])


def speed(s: Scene, label: str) -> np.ndarray:
    size = int(min(s.h, s.w) * 0.3)
    patch, bg = s.patch(size), s.background()
    v = {"slow": 0.15, "medium": 0.4, "fast": 0.9}[label] * s.rng.uniform(0.85, 1.15) / s.t
    direction = DIRECTIONS[str(s.rng.choice(list(DIRECTIONS)))]
    return s.video([s.paste(bg, patch, *p) for p in _path(s.rng, s.t, direction, v)])


def which_moves(s: Scene, label: str) -> np.ndarray:
    size = int(min(s.h, s.w) * 0.28)
    a, b, bg = s.patch(size), s.patch(size, angle=np.pi / 2), s.background()
    sign = 1 if s.rng.random() < 0.5 else -1
    ys = 0.5 + sign * 0.25 * np.sin(np.linspace(0, np.pi, s.t) - np.pi / 2)
    frames = []
    for t in range(s.t):
        left_y, right_y = (ys[t], 0.5) if label == "left" else (0.5, ys[t])
        frames.append(s.paste(s.paste(bg, a, left_y, 0.27), b, right_y, 0.73))
    return s.video(frames)


def periodic(s: Scene, label: str) -> np.ndarray:
    size = int(min(s.h, s.w) * 0.3)
    patch, bg = s.patch(size), s.background()
    axis = int(s.rng.integers(2))
    u = np.linspace(0, 1, s.t)
    along = 0.5 + 0.3 * np.sin(2 * np.pi * u * s.rng.uniform(1.5, 2.5)) if label == "back-and-forth" else 0.2 + 0.6 * u
    if s.rng.random() < 0.5 and label == "one-way":
        along = along[::-1]
    return s.video([s.paste(bg, patch, *((a, 0.5) if axis == 0 else (0.5, a))) for a in along])


def digit_direction(s: Scene, label: str) -> np.ndarray:
    digit, way = label.split("-")
    size = int(min(s.h, s.w) * 0.4)
    pool = s.digits[int(digit)]
    src = pool[int(s.rng.integers(len(pool)))]
    patch, bg = s.patch(size, source=src), s.background() * 0.4
    return s.video([s.paste(bg, patch, *p) for p in _path(s.rng, s.t, DIRECTIONS[way], 0.5 / s.t)])


def pan_vs_object(s: Scene, label: str) -> np.ndarray:
    size = int(min(s.h, s.w) * 0.3)
    patch = s.patch(size)
    direction = np.array(DIRECTIONS[str(s.rng.choice(list(DIRECTIONS)))])
    step = s.rng.uniform(0.3, 0.5) * min(s.h, s.w) / s.t  # pixels per frame
    frames = []
    for t in range(s.t):
        if label == "camera-pan":  # the scene and the patch in it move together
            off = direction * step * t
            frames.append(s.paste(s.background(off[0], off[1]), patch, 0.5 - off[0] / s.h, 0.5 - off[1] / s.w))
        else:
            frames.append(s.paste(s.background(), patch, 0.5 + direction[0] * step * t / s.h - 0.2 * direction[0],
                                  0.5 + direction[1] * step * t / s.w - 0.2 * direction[1]))  # fmt: skip
    return s.video(frames)


TASKS: dict[str, tuple[list[str], Callable]] = {
    "translate": (list(DIRECTIONS), translate),
    "rotate": (["clockwise", "counter-clockwise"], rotate),
    "zoom": (["in", "out"], zoom),
    "speed": (["slow", "medium", "fast"], speed),
    "which-moves": (["left", "right"], which_moves),
    "periodic": (["back-and-forth", "one-way"], periodic),
    "digit-direction": (["0-left", "0-right", "1-left", "1-right"], digit_direction),
    "pan-vs-object": (["camera-pan", "object"], pan_vs_object),
}


def make_task(root: Path, task: str, train_videos: int, test_per_class: int, seed: int = 0) -> Path:
    """Write ``root/train|test/CLASS/NNNN.mp4`` for ``task``: about ``train_videos`` training videos shared
    equally by its classes (so a 2-class task learns from as many videos as a 4-class one), ``test_per_class``
    test videos a class; returns ``root``."""
    from cnnlstm.data.synthetic import write_class_videos

    classes, render = TASKS[task]
    photos, digits = _photos(), _digits()

    def frames(split: str, label: str, rng: np.random.Generator, t: int, h: int, w: int) -> np.ndarray:
        return render(Scene(rng, photos, h, w, t, digits), label)

    split = {"train": round(train_videos / len(classes)), "test": test_per_class}
    return write_class_videos(root, split, classes, frames, np.random.default_rng(seed), SIZES, LENGTHS)


# ----------------------------------------------------------------------------- training and scoring


def run_one(data: Path, out: Path, config: dict, seed: int) -> dict:
    """Train with ``config`` (the options a user gives) and score on the test split."""
    from cnnlstm.apps.evaluate import evaluate
    from cnnlstm.build import ModelOptions
    from cnnlstm.tasks.entry import train

    t0 = time.time()
    options = {"seed": seed, "progress": False, "workers": 1, "overwrite": True, **config.get("options", {})}
    summary = train(data, out, model=ModelOptions(**config.get("model", {})), clip=config.get("clip"), options=options)
    seconds = time.time() - t0
    result = evaluate(out, data, split="test")
    return {"accuracy": result.accuracy, "macro_f1": result.macro_f1, "train_seconds": round(seconds, 1),
            "epochs": summary.epochs}  # fmt: skip


def table(rows: list[dict], configs: list[str], tasks: list[str]) -> list[str]:
    """Markdown: tasks x configurations, mean test accuracy over seeds (macro-F1, training seconds)."""

    def cell(task: str, config: str) -> str:
        got = [r for r in rows if r["task"] == task and r["config"] == config]
        if not got:
            return "-"
        acc, f1 = np.mean([r["accuracy"] for r in got]), np.mean([r["macro_f1"] for r in got])
        return f"{acc:.3f} (F1 {f1:.3f}, {np.mean([r['train_seconds'] for r in got]):.0f} s, {len(got)} seeds)"

    out = ["| task | " + " | ".join(configs) + " |", "|---|" + "---|" * len(configs)]
    out += [f"| {t} | " + " | ".join(cell(t, c) for c in configs) + " |" for t in tasks]
    means = []
    for c in configs:
        per_task = [np.mean([r["accuracy"] for r in rows if r["task"] == t and r["config"] == c]) for t in tasks
                    if any(r["task"] == t and r["config"] == c for r in rows)]  # fmt: skip
        part = "" if len(per_task) == len(tasks) else f" ({len(per_task)} of {len(tasks)} tasks)"
        means.append(f"{np.mean(per_task):.3f} / {np.min(per_task):.3f}{part}" if per_task else "-")
    return [*out, "| **mean / worst task** | " + " | ".join(means) + " |"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="Seeds first-seed .. first-seed + seeds - 1.")
    ap.add_argument("--train-videos", type=int, default=240, help="Training videos a task, shared by its classes.")
    ap.add_argument("--test-per-class", type=int, default=20)
    ap.add_argument("--data", default=None, help="Keep the videos here (default: a temporary folder).")
    ap.add_argument("--make-only", action="store_true", help="Write the videos and stop.")
    ap.add_argument("--table-only", action="store_true", help="Rewrite video_suite.md from the saved results.")
    args = ap.parse_args()
    tasks, configs = args.tasks.split(","), args.configs.split(",")
    if args.table_only:
        return write(_saved(), args)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data or tmp)
        for task in tasks:
            data = root / task
            if not (data / "test").is_dir():
                t0 = time.time()
                make_task(data, task, args.train_videos, args.test_per_class)
                print(f"{task}: videos written in {time.time() - t0:.0f} s", flush=True)
            if args.make_only:
                continue
            for config in configs:
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    r = run_one(data, root / "runs" / f"{task}-{config}-{seed}", CONFIGS[config], seed)
                    row = {"task": task, "config": config, "seed": seed, "train_videos": args.train_videos, **r,
                           "processor": machine().get("processor")}  # fmt: skip
                    print(f"{task} {config} seed {seed}: accuracy {r['accuracy']:.3f}, "
                          f"{r['train_seconds']:.0f} s, {r['epochs']} epochs", flush=True)  # fmt: skip
                    # saved at once (a long run that stops keeps what it measured); a measurement replaces the saved
                    # one of the same task, configuration, seed and data size, the others stay; under a lock, so
                    # suites run side by side (one per core) keep each other's rows
                    with _locked():
                        write([*[x for x in _saved() if _key(x) != _key(row)], row], args)


@contextlib.contextmanager
def _locked():
    import fcntl

    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / ".video_suite.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _key(row: dict) -> tuple:
    return row["task"], row["config"], row["seed"], row.get("train_videos"), row.get("train_per_class")


def _saved() -> list[dict]:
    path = RESULTS / "video_suite.json"
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def write(rows: list[dict], args: argparse.Namespace) -> None:
    """``results/video_suite.json`` and ``.md``: every saved row, tasks and configurations in the suite's order."""
    here = machine()
    # the table is of one data size (rows of other sizes stay in the JSON)
    shown = [r for r in rows if r.get("train_videos") == args.train_videos]
    tasks = [t for t in TASKS if any(r["task"] == t for r in shown)]
    configs = [c for c in CONFIGS if any(r["config"] == c for r in shown)]
    lines = table(shown, configs, tasks)
    processors = sorted({str(r.get("processor", here.get("processor"))) for r in shown})
    head = [
        "# Video suite",
        "",
        f"`python bench/video_suite.py` ({args.train_videos} training videos a task, shared by its classes, and "
        f"{args.test_per_class} test videos a class) on {', '.join(processors)}, {here.get('cores')} cores. Test "
        "accuracy, mean over seeds (macro-F1, training seconds, seeds); the last row is the mean over tasks and the "
        "worst task.",
        "",
    ]
    (RESULTS / "video_suite.md").write_text("\n".join([*head, *lines]) + "\n")
    save("video_suite", {"machine": here, "configs": {c: CONFIGS[c] for c in configs}, "rows": rows})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
