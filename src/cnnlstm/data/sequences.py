"""Whole sequences rather than sampled clips: every frame of a video, a long series with its per-step labels.

Anomaly detection learns and scores sequences end to end; these read them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .datasets import VideoDataset
from .series import load_sequence
from .transforms import ClipTransform
from .video import VIDEO_EXTENSIONS, read_frames

__all__ = ["labelled_sequence", "video_files", "whole_video"]


def video_files(folder: str | Path) -> list[Path]:
    """Every video file under ``folder``, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


def whole_video(ds: VideoDataset, i: int) -> torch.Tensor:
    """Every frame of video ``i`` of ``ds`` at the spec's size, normalised: ``(T, C, H, W)``."""
    info = ds.infos[i]
    frames = read_frames(ds.items[i].path, range(info.frames), ds.spec.size, ds.spec.channels, info)
    return ClipTransform(mean=ds.spec.mean, std=ds.spec.std)(frames)


def labelled_sequence(source: str, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Values ``(T, F)`` and per-step labels ``(T,)`` (or None) of a series source.

    ``aeon:KDD-TSAD_NNN`` names a set aeon ships with both a ``train`` and a ``test`` part; an
    ``is_anomaly`` column gives the labels; ``timestamp`` and label columns are not values.
    """
    if source.startswith("aeon:") and "TSAD" in source:
        import aeon

        folder = Path(aeon.__file__).parent / "datasets" / "data" / source.split(":", 1)[1]
        files = sorted(folder.glob(f"*_{split.upper()}.csv"))
        if not files:
            raise DataError(f"{source}: no {split} part shipped")
        source = str(files[0])
    values, names = load_sequence(source)
    keep = [i for i, n in enumerate(names) if n not in ("timestamp", "is_anomaly", "label")]
    labels = values[:, names.index("is_anomaly")] if "is_anomaly" in names else None
    return values[:, keep], labels
