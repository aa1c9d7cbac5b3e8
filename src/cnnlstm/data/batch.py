"""Batches: the one dict contract the tasks read, and the DataLoaders that make them.

Every batch is a dict with ``"video"`` ``(N, T, C, H, W)`` or ``"series"`` ``(N, T, F)`` (None when every
sample of the batch failed to load), ``"lengths"`` ``(N,)`` or None when all are full length, ``"index"``
``(N,)`` into the data set, ``"skipped"`` ``[(path, reason), ...]``, and ``"label"`` ``(N,)`` or
``"target"`` ``(N, ...)`` where the task has them (:func:`collate_clips`,
:func:`~cnnlstm.data.series.collate_series`, :func:`window_loader`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .datasets import BadSample
from .series import collate_series

__all__ = ["SkipLog", "batch_input", "collate_clips", "series_loader", "video_loader", "window_loader"]

log = logging.getLogger("cnnlstm.data")


def collate_clips(batch: list[dict[str, Any] | BadSample]) -> dict[str, Any]:
    """Stack clips into a batch, dropping failed samples and padding variable lengths.

    Returns:
        ``{"video": (N, T, C, H, W), "label": (N,), "lengths": (N,), "index": (N,), "windows": None,
        "skipped": [(path, reason), ...]}``; ``lengths`` is None when every clip is full length.
        Dense samples ``(W, T, C, H, W)`` give ``video`` ``(N, W_max, T, C, H, W)``, zero-padded
        windows, and ``windows`` ``(N,)``, the real number of each.
    """
    skipped = [(b.path, b.reason) for b in batch if isinstance(b, BadSample)]
    good = [b for b in batch if not isinstance(b, BadSample)]
    if not good:
        return {"video": None, "label": None, "lengths": None, "index": None, "windows": None, "skipped": skipped}
    lengths = torch.tensor([b["length"] for b in good])
    t = int(lengths.max())
    videos = [_pad_axis(b["video"], -4, t) for b in good]  # every clip to T steps
    windows = None
    if videos[0].dim() == 5:  # dense: every sample to the most windows
        counts = torch.tensor([v.shape[0] for v in videos])
        videos = [_pad_axis(v, 0, int(counts.max())) for v in videos]
        windows = counts
    return {
        "video": torch.stack(videos),
        "label": torch.tensor([b["label"] for b in good]),
        "lengths": None if bool((lengths == t).all()) else lengths,
        "index": torch.tensor([b["index"] for b in good]),
        "windows": windows,
        "skipped": skipped,
    }


def _pad_axis(v: torch.Tensor, axis: int, size: int) -> torch.Tensor:
    """Zero-pad ``v`` along ``axis`` up to ``size``."""
    missing = size - v.shape[axis]
    if missing <= 0:
        return v
    shape = list(v.shape)
    shape[axis] = missing
    return torch.cat([v, v.new_zeros(shape)], dim=axis)


@dataclass
class SkipLog:
    """Counts the files a run left out, each named once."""

    seen: dict[str, str] = field(default_factory=dict)

    def add(self, entries: Sequence[tuple[str, str]], warn: bool = True) -> None:
        for path, reason in entries:
            if path not in self.seen:
                self.seen[path] = reason
                if warn:
                    log.warning("skipped %s: %s", path, reason)

    def __len__(self) -> int:
        return len(self.seen)


def batch_input(batch: dict[str, Any]) -> torch.Tensor | None:
    """The model input of a batch: ``(N, T, C, H, W)`` clips or ``(N, T, F)`` series; None if all failed."""
    return batch["video"] if "video" in batch else batch["series"]


def video_loader(ds, batch_size: int, workers: int = 0, shuffle: bool = False, seed: int = 0):
    """Batches of clips from a :class:`~cnnlstm.data.datasets.VideoDataset`, decoded by ``workers`` processes."""
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate_clips,
        worker_init_fn=ds.worker_init if workers else None,
        persistent_workers=workers > 0,
        # workers start from a clean server process: forking a process that already runs decoder, probe and
        # OpenMP threads can deadlock a worker on a lock copied in its held state
        multiprocessing_context="forkserver" if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )


def series_loader(ds, batch_size: int, shuffle: bool = False, seed: int = 0, pad_to: int | None = None):
    """Batches of padded series from a :class:`~cnnlstm.data.series.SeriesDataset`, each padded to its longest
    series or to ``pad_to`` steps (a model that takes one ``T``)."""
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=functools.partial(collate_series, pad_to=pad_to),
        generator=torch.Generator().manual_seed(seed),
    )


def window_loader(series: torch.Tensor, target: torch.Tensor | None = None, batch_size: int = 16, seed: int = 0):
    """Shuffled batches of equal-length windows ``(B, T, F)``, with their ``target`` ``(B, ...)`` if given."""

    def collate(idx: list[int]) -> dict[str, Any]:
        i = torch.tensor(idx)
        batch = {"series": series[i], "lengths": None, "index": i, "skipped": []}
        if target is not None:
            batch["target"] = target[i]
        return batch

    return torch.utils.data.DataLoader(
        range(len(series)),
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
    )
