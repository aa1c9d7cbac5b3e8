"""bench/edge.py's helpers, without any runtime: timing in interleaved rounds, long streams looped from clips, the
drift of a stream's logits per window of frames, and the tables."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from _common import summary


def interleaved(cases: dict[str, Callable[[], object]], rounds: int, per_round: int, warm: int) -> dict[str, dict]:
    """Milliseconds per call of each case: ``warm`` untimed calls each, then ``rounds`` rounds that call every case
    ``per_round`` times in turn, so a slow spell of the machine spreads over all of them. Returns
    :func:`_common.summary` (median, min, max, n) per case."""
    for fn in cases.values():
        for _ in range(warm):
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: summary(v) for name, v in times.items()}


def batch_of(clips: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` clips ``(n, T, ...)``: the first ``n`` of ``clips``, repeated where there are fewer."""
    reps = -(-n // len(clips))  # ceil
    return torch.cat([clips] * reps)[:n].contiguous()


def looped_frames(clips: torch.Tensor, frames: int, streams: int, t_axis: int = 1) -> torch.Tensor:
    """``streams`` long streams of ``frames`` frames from ``clips`` ``(N, T, ...)``: stream ``s`` plays the clips one
    after another from clip ``s`` on, looping over them; ``(streams, frames, ...)`` with T on ``t_axis``."""
    seq = clips.movedim(t_axis, 1)  # (N, T, ...)
    n, t = seq.shape[:2]
    per_stream = -(-frames // t)  # clips a stream plays
    out = torch.stack([torch.cat([seq[(s + k) % n] for k in range(per_stream)])[:frames] for s in range(streams)])
    return out.movedim(1, t_axis).contiguous()  # (S, frames, ...) in the clips' layout


def drift_windows(ref: np.ndarray, got: np.ndarray, window: int = 50) -> list[dict]:
    """How far a stream's logits ``got`` ``(S, F, classes)`` drift from the reference ``ref`` (same shape), per
    window of ``window`` frames: the largest absolute difference and the share of (stream, frame) pairs with the
    same top-1 class."""
    if ref.shape != got.shape:
        raise ValueError(f"drift_windows: logits of one shape, got {ref.shape} and {got.shape}")
    rows = []
    for start in range(0, ref.shape[1], window):
        a, b = ref[:, start : start + window], got[:, start : start + window]
        rows.append(
            {
                "frames": f"{start}-{start + a.shape[1] - 1}",
                "max_abs_diff": float(np.abs(a - b).max()),
                "top1_agreement": float((a.argmax(-1) == b.argmax(-1)).mean()),
            }
        )
    return rows


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _ms(entry: dict | None) -> float | None:
    return None if entry is None else entry["median"]


def table(rows: list[dict], threads: int) -> list[str]:
    """The side-by-side table (markdown) of :func:`edge.py`'s rows: size, latency per clip at batch 1 and 8 and per
    streamed frame at batch 1 (medians), speed against PyTorch float32 at batch 8 and per frame, agreement and
    accuracy."""
    base = next((r for r in rows if r["name"] == "PyTorch float32" and not r.get("skipped")), None)
    base_clip = None if base is None else _ms(base["clip_ms"].get("8"))
    base_frame = None if base is None else _ms(base.get("frame_ms"))
    head = [
        f"| artifact ({threads} threads) | clip / stream MB | ms per clip, batch 1 | ms per batch of 8 | clips/s, "
        "batch 8 | x PyTorch fp32, batch 8 | ms per streamed frame, batch 1 | x PyTorch fp32, per frame "
        "| top-1 agreement with PyTorch fp32 | test accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines = []
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['name']} | {r['skipped']} |" + "  |" * 8)
            continue
        b8, frame = _ms(r["clip_ms"].get("8")), _ms(r.get("frame_ms"))
        sizes = " / ".join(_num(r["size_mb"].get(k), ".2f") for k in ("clip", "stream"))
        lines.append(
            f"| {r['name']} | {sizes} | {_num(_ms(r['clip_ms'].get('1')), '.2f')} | {_num(b8, '.1f')} "
            f"| {_num(_ratio(8e3, b8), '.0f')} | {_num(_ratio(base_clip, b8), '.2f')} | {_num(frame, '.2f')} "
            f"| {_num(_ratio(base_frame, frame), '.2f')} | {_num(r.get('agreement'), '.3f')} "
            f"| {_num(r.get('accuracy'), '.3f')} |"
        )
    return head + lines


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not (a and b) else a / b


def drift_table(drift: dict) -> list[str]:
    """The drift report (markdown): per artifact, each window's largest difference from the reference's logits and
    its top-1 agreement."""
    rows = drift["rows"]
    if not rows:
        return []
    windows = [w["frames"] for w in next(iter(rows.values()))]
    out = [
        "| artifact | " + " | ".join(f"frames {w}: max abs diff, agreement" for w in windows) + " |",
        "|---|" + "---|" * len(windows),
    ]
    for name, ws in rows.items():
        cells = [f"{w['max_abs_diff']:.2e}, {w['top1_agreement']:.3f}" for w in ws]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out
