"""Stream a video file frame by frame through a run's model, carrying the RNN state (no whole-video buffer)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..data.transforms import ClipTransform
from ..data.video import iter_frames
from ..errors import ConfigError
from ..run import Run, load_run

__all__ = ["stream_video"]


def check_streams_video(r: Any) -> None:
    """Refuse a run that did not learn from videos, with what to do instead."""
    if r.kind.modality != "video":
        raise ConfigError(
            f"{r.path} learnt {r.kind}: stream reads video files frame by frame. For a series, step a causal model "
            "in Python (CNNLSTM.from_pretrained(RUN).stream().step(x), x (N, F) one step); `cnnlstm predict RUN "
            "FILE` classifies whole series"
        )


def stream_video(
    run: str | Path | Run,
    video: str | Path,
    stride: int = 1,
    every: int = 0,
    on_update: Callable[[int, np.ndarray], None] | None = None,
) -> dict[str, Any]:
    """Stream a video file frame by frame through a run's model.

    Args:
        run: a run folder (or a loaded :class:`~cnnlstm.run.Run`, streamed in its ``precision``; one of
            :func:`~cnnlstm.export.runtime.load_for_runtime` streams in its exported graph).
        video: the video file.
        stride: feed every ``stride``-th frame (a model trained on clips sampled sparsely
            over whole videos reads a sparser stream better).
        every: call ``on_update(frame_index, probs)`` every ``every`` fed frames (0: never).
        on_update: the callback; ``probs`` is ``(classes,)``.

    Returns:
        ``{"frames": [frame index of each step], "probs": (steps, classes) array, "classes": [...], "runtime":
        which runtime and precision ran}``.
    """
    from ..export.runtime import ran_on

    r = run if isinstance(run, Run) else load_run(run)
    check_streams_video(r)
    if stride < 1:
        raise ConfigError(f"stride must be a positive number of frames, got {stride}")
    streamer = r.model.stream()
    norm = ClipTransform(mean=r.spec.mean, std=r.spec.std)
    frames, probs = [], []
    with r.model.autocast(r.precision):
        for i, frame in enumerate(iter_frames(video, r.spec.size, r.spec.channels)):
            if i % stride:
                continue
            p = streamer.step(norm(frame[None])).softmax(-1)[0]  # (1, C, H, W) -> (classes,)
            frames.append(i)
            probs.append(p.numpy().astype(np.float32))
            if every and on_update is not None and len(probs) % every == 0:
                on_update(i, probs[-1])
    if not probs:
        raise ConfigError(f"{video}: no frame decoded")
    return {"frames": frames, "probs": np.stack(probs), "classes": r.classes, "runtime": ran_on(r)}
