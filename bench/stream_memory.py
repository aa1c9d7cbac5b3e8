"""`cnnlstm stream` on a long video: resident memory sampled while streaming stays flat.

Run: python bench/stream_memory.py [--minutes 10] [--run runs/demo]

Writes a synthetic moving-digits video of the given length (25 fps, 64x64 H.264) unless one is
there, streams it through a run's model with :func:`cnnlstm.apps.stream.stream_video`, and samples
the process's resident set size every 500 frames.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, machine, save

from cnnlstm.apps.stream import stream_video
from cnnlstm.data import write_video
from cnnlstm.data.synthetic import CLASSES, _digits, moving_digit_frames


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def long_video(path: Path, minutes: float, fps: int = 25) -> Path:
    """Moving digits, one 40-frame motion after another, written frame by frame (never all in memory)."""
    rng = np.random.default_rng(0)
    digits = _digits()
    names = list(CLASSES)
    total = int(minutes * 60 * fps)

    def frames():
        n = 0
        while n < total:
            clip = moving_digit_frames(
                names[int(rng.integers(len(names)))], digits[int(rng.integers(len(digits)))], rng, 40, 64, 64
            )
            yield from clip[: total - n]
            n += len(clip)

    return write_video(path, frames(), fps=fps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--video", default=None)
    args = ap.parse_args()
    video = Path(args.video or RESULTS / f"long-{args.minutes:g}min.mp4")
    if not video.is_file():
        RESULTS.mkdir(exist_ok=True)
        t0 = time.time()
        long_video(video, args.minutes)
        print(f"wrote {video} ({video.stat().st_size / 1e6:.1f} MB) in {time.time() - t0:.0f} s")
    samples: list[tuple[int, float]] = [(0, rss_mb())]

    def sample(i: int, _p) -> None:
        samples.append((i, rss_mb()))

    t0 = time.time()
    out = stream_video(args.run, video, stride=1, every=500, on_update=sample)
    secs = time.time() - t0
    samples.append((out["frames"][-1], rss_mb()))
    rss = np.array([s[1] for s in samples])
    after_start = rss[2:] if len(rss) > 3 else rss
    result = {
        "machine": machine(),
        "video": str(video),
        "frames": len(out["frames"]),
        "seconds": secs,
        "frames_per_s": len(out["frames"]) / secs,
        "rss_mb": samples,
        "rss_growth_mb_after_first_1000_frames": float(after_start[-1] - after_start[0]),
    }
    path = save("stream_memory", result)
    print(f"processor: {result['machine'].get('processor')}")
    print(f"streamed {len(out['frames'])} frames in {secs:.0f} s ({result['frames_per_s']:.0f} frames/s)")
    print(
        f"resident memory: start {rss[0]:.0f} MB, after 1000 frames {after_start[0]:.0f} MB, "
        f"end {rss[-1]:.0f} MB, max {rss.max():.0f} MB"
    )
    print(f"json: {path}")
    video.unlink() if args.video is None and args.minutes >= 5 else None


if __name__ == "__main__":
    main()
