"""Video data sets: class folders, split folders or a CSV manifest; broken files skipped and counted.

Layouts understood:

- ``root/CLASS/*.mp4``: one folder per class (split later, stratified);
- ``root/train|val|test/CLASS/*``: the splits are given;
- ``manifest.csv`` with ``path,label[,start,end]`` (seconds; paths relative to the CSV's folder).

Every file found is probed in parallel when the set is indexed; one that is corrupt, truncated,
empty, has no frames or no video stream is skipped with one warning naming it and the reason,
and counted in :attr:`VideoDataset.skipped`. A file that fails later, at load, comes out as a
:class:`BadSample`, which :func:`cnnlstm.data.batch.collate_clips` drops and reports. Paths that lead outside the
data root (symlinks, ``..``) are refused the same way.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError, VideoError
from .sampling import PADS, SAMPLINGS, sample
from .transforms import ClipTransform
from .video import VIDEO_EXTENSIONS, VideoInfo, probe, read_frames

__all__ = ["BadSample", "ClipSpec", "VideoDataset", "VideoItem", "find_videos", "stratified_split"]

log = logging.getLogger("cnnlstm.data")
SPLITS = ("train", "val", "test")


@dataclass
class ClipSpec:
    """How a video becomes a model input; saved with a run so that predict samples the same way.

    Attributes:
        clip_len: frames per clip (T).
        size: frame size (H, W) the decoder resizes to: 64 or HxW.
        channels: 3 (RGB) or 1 (gray).
        sampling: uniform | random | dense (see cnnlstm.data.sampling).
        stride: frame step of random and dense clips.
        pad: videos shorter than T: repeat the last frame, or pad and pass lengths.
        mean: per-channel normalisation mean.
        std: per-channel normalisation spread.
    """

    clip_len: int = 8
    size: tuple[int, int] = (64, 64)
    channels: int = 3
    sampling: str = "uniform"
    stride: int = 1
    pad: str = "repeat"
    mean: tuple[float, ...] = (0.45, 0.45, 0.45)
    std: tuple[float, ...] = (0.225, 0.225, 0.225)

    def __post_init__(self):
        self.size = tuple(self.size)
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        if self.sampling not in SAMPLINGS:
            raise ConfigError(f"unknown sampling {self.sampling!r}: expected one of {', '.join(SAMPLINGS)}")
        if self.pad not in PADS:
            raise ConfigError(f"unknown pad policy {self.pad!r}: expected one of {', '.join(PADS)}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if self.clip_len < 1:
            raise ConfigError(f"clip_len (frames per clip) must be at least 1, got {self.clip_len}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ConfigError(f"size is a frame's (height, width) in pixels, both at least 1, got {self.size}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipSpec:
        return cls(**d)

    def for_scoring(self, sampling: str | None = None) -> ClipSpec:
        """The spec that validation, evaluation and prediction sample with: ``sampling`` where given, else the
        run's own, with ``random`` (a training-time choice) replaced by deterministic ``uniform`` clips."""
        d = self.to_dict()
        d["sampling"] = sampling or ("uniform" if d["sampling"] == "random" else d["sampling"])
        return ClipSpec.from_dict(d)


@dataclass
class VideoItem:
    """One video of a data set: its path, label index and optional time range (seconds)."""

    path: str
    label: int
    start: float | None = None
    end: float | None = None


@dataclass
class BadSample:
    """A sample that failed at load: :func:`cnnlstm.data.batch.collate_clips` drops it and reports it."""

    path: str
    reason: str


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _class_files(folder: Path, root: Path, refused: list[tuple[str, str]]) -> list[Path]:
    files = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if not _inside(p, root):
            refused.append((str(p), f"outside the data root {root} (a symlink?)"))
            continue
        if p.is_file() and p.suffix.lower() not in VIDEO_EXTENSIONS:
            refused.append(
                (str(p), f"not a video file ({p.suffix or 'no extension'}; videos are {', '.join(VIDEO_EXTENSIONS)})")
            )
        elif p.is_file():
            files.append(p)
    return files


def find_videos(root: str | Path, split: str | None = None) -> tuple[list[VideoItem], list[str], list[tuple[str, str]]]:
    """Index a data set without probing: the items, the sorted class names, and refused paths.

    Args:
        root: a folder of class folders, a folder with ``train/val/test`` split folders, or a CSV manifest.
        split: with split folders (or a manifest with a ``split`` column), which one to read;
            the class names always come from ``train`` when it exists.

    Raises:
        DataError: no such folder, no class folders, an empty class folder, a label in
            the split that the training split does not have.
    """
    root = Path(root)
    refused: list[tuple[str, str]] = []
    if root.is_file() and root.suffix.lower() == ".csv":
        return (*_read_manifest(root, split, refused), refused)
    if not root.is_dir():
        raise DataError(f"data root {str(root)!r} does not exist (give a folder of class folders or a CSV manifest)")
    has_splits = any((root / s).is_dir() for s in SPLITS)
    if has_splits:
        base = root / "train" if (root / "train").is_dir() else root / (split or "test")
        classes = class_names(base)
        folder = root / (split or "train")
        if not folder.is_dir():
            raise DataError(f"{root} has split folders but no {folder.name!r} split")
    else:
        classes = class_names(root)
        folder = root
    present = class_names(folder, allow_empty_root=True)
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise DataError(
            f"{folder} has classes that the training split does not: {', '.join(unknown)} "
            f"(the model only knows {', '.join(classes)})"
        )
    items: list[VideoItem] = []
    for label, name in enumerate(classes):
        cdir = folder / name
        if not cdir.is_dir():
            continue
        files = _class_files(cdir, root, refused)
        if not files and folder.name != "test":
            raise DataError(f"class folder {cdir} has no files: add videos or remove the folder")
        items += [VideoItem(str(p), label) for p in files]
    if not items:
        raise DataError(f"no videos under {folder}")
    return items, classes, refused


def class_names(folder: Path, allow_empty_root: bool = False) -> list[str]:
    """The class folders of ``folder``, sorted (split folders and hidden ones left out)."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder")
    names = sorted(
        p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in SPLITS
    )
    if not names and not allow_empty_root:
        raise DataError(
            f"{folder} has no class folders: lay the videos out as {folder}/CLASS/video.mp4 "
            f"(or {folder}/train/CLASS/..., or give a CSV manifest path,label)"
        )
    return names


def _read_manifest(path: Path, split: str | None, refused: list) -> tuple[list[VideoItem], list[str]]:
    root = path.parent
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise DataError(f"manifest {path} needs a header with at least path,label (optional start,end,split)")
    classes = sorted(
        {r["label"] for r in rows if r.get("split", "train") in ("train", "", None)} or {r["label"] for r in rows}
    )
    if split is not None and "split" in rows[0]:
        rows = [r for r in rows if r["split"] == split]
    unknown = sorted({r["label"] for r in rows} - set(classes))
    if unknown:
        raise DataError(f"manifest {path}: labels {', '.join(unknown)} are not in its training rows")
    items = []
    for i, r in enumerate(rows, start=2):
        p = Path(r["path"])
        full = p if p.is_absolute() else root / p
        if p.is_absolute() or ".." in p.parts or not _inside(full, root):
            refused.append((r["path"], f"line {i} of {path.name}: outside the data root {root}"))
            continue
        try:
            start = float(r["start"]) if r.get("start") else None
            end = float(r["end"]) if r.get("end") else None
        except ValueError:
            raise DataError(
                f"manifest {path} line {i}: start/end must be seconds, got {r.get('start')!r}, {r.get('end')!r}"
            ) from None
        items.append(VideoItem(str(full), classes.index(r["label"]), start, end))
    if not items:
        raise DataError(f"manifest {path} lists no usable video" + (f" for split {split!r}" if split else ""))
    return items, classes


def stratified_split(labels: Sequence[int], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices of a train/val split that keeps each class's share (at least one val item per class of 2+)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(len(idx) * val_fraction))
        k = min(max(k, 1 if len(idx) > 1 and val_fraction > 0 else 0), len(idx) - 1)
        val += idx[:k].tolist()
        train += idx[k:].tolist()
    return sorted(train), sorted(val)


class VideoDataset(torch.utils.data.Dataset):
    """Clips from video files: ``dataset[i]`` → ``{"video": (T, C, H, W), "label", "length", "index"}``.

    Args:
        items: the videos (see :func:`find_videos`).
        classes: class names, index = label.
        spec: how to decode and sample (:class:`ClipSpec`).
        transform: uint8 ``(T, H, W, C)`` → float ``(T, C, H, W)``; default normalises by ``spec``.
        probe_workers: threads for the parallel probe.
        refused: paths already refused while indexing, counted with the skipped ones.
        seed: seeds ``random`` sampling and jitter.
        infos: the items' probes when the caller has them (no second probe).
        jitter: for training: ``uniform`` clips start at a random place in the first segment.

    Attributes:
        skipped: ``(path, reason)`` of every file left out while indexing.
        infos: the probe of each kept item.
    """

    def __init__(
        self,
        items: Sequence[VideoItem],
        classes: Sequence[str],
        spec: ClipSpec | None = None,
        transform: ClipTransform | None = None,
        probe_workers: int = 4,
        refused: Sequence[tuple[str, str]] = (),
        seed: int | None = None,
        warn: bool = True,
        infos: Sequence[VideoInfo] | None = None,
        jitter: bool = False,
    ):
        self.classes = list(classes)
        self.jitter = jitter
        self.spec = spec or ClipSpec()
        self.transform = transform or ClipTransform(mean=self.spec.mean, std=self.spec.std)
        self.skipped: list[tuple[str, str]] = list(refused)
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        if infos is not None:  # probed already by the caller
            probed = [(info, "") for info in infos]
        else:
            with ThreadPoolExecutor(max(1, probe_workers)) as pool:
                probed = list(pool.map(_try_probe, [it.path for it in items]))
        self.items: list[VideoItem] = []
        self.infos: list[VideoInfo] = []
        for it, (info, reason) in zip(items, probed):
            if info is None:
                self.skipped.append((it.path, reason))
            else:
                self.items.append(it)
                self.infos.append(info)
        if warn:
            for path, reason in self.skipped:
                log.warning("skipped %s: %s", path, reason)
        if not self.items:
            raise DataError(
                f"none of the {len(items)} files could be read as video: "
                + "; ".join(f"{p}: {r}" for p, r in self.skipped[:5])
            )

    @classmethod
    def from_root(cls, root: str | Path, split: str | None = None, **kwargs) -> VideoDataset:
        """Index ``root`` (folders or manifest, see :func:`find_videos`) and probe every file."""
        items, classes, refused = find_videos(root, split)
        return cls(items, classes, refused=refused, **kwargs)

    def subset(
        self, indices: Sequence[int], spec: ClipSpec | None = None, transform: ClipTransform | None = None
    ) -> VideoDataset:
        """The items at ``indices`` (no new probe), optionally with another spec or transform."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.items = [self.items[i] for i in indices]
        new.infos = [self.infos[i] for i in indices]
        new.skipped = list(self.skipped)
        new.spec = spec or self.spec
        new.transform = transform or (ClipTransform(mean=new.spec.mean, std=new.spec.std) if spec else self.transform)
        return new

    @property
    def labels(self) -> list[int]:
        return [it.label for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def _range(self, i: int) -> tuple[int, int]:
        """First frame and frame count of item ``i`` after its start/end."""
        it, info = self.items[i], self.infos[i]
        first = int(it.start * info.fps) if it.start else 0
        last = min(info.frames, int(np.ceil(it.end * info.fps))) if it.end else info.frames
        first = min(first, max(0, last - 1))
        return first, max(1, last - first)

    def clip_indices(self, i: int) -> list[np.ndarray]:
        """The frame indices of item ``i``: one array, or one per window for ``dense`` sampling."""
        first, n = self._range(i)
        s = self.spec
        return [first + w for w in sample(n, s.clip_len, s.sampling, s.stride, self._rng, s.pad, self.jitter)]

    def load(self, i: int, indices: np.ndarray) -> torch.Tensor:
        """Decode and transform the frames of item ``i`` at ``indices``: ``(T, C, H, W)`` float."""
        frames = read_frames(self.items[i].path, indices, self.spec.size, self.spec.channels, self.infos[i])
        return self.transform(frames)

    def __getitem__(self, i: int) -> dict[str, Any] | BadSample:
        try:
            windows = self.clip_indices(i)
            if self.spec.sampling == "dense":  # (W, T, C, H, W), one clip per window
                video = torch.stack([self.load(i, w) for w in windows])
            else:
                video = self.load(i, windows[0])  # (T, C, H, W)
        except VideoError as e:
            return BadSample(self.items[i].path, str(e))
        return {"video": video, "label": self.items[i].label, "length": video.shape[-4], "index": i}

    def worker_init(self, worker_id: int) -> None:
        """Give each DataLoader worker its own random stream for ``random`` sampling."""
        info = torch.utils.data.get_worker_info()
        base = self._seed if self._seed is not None else int(torch.initial_seed() % 2**31)
        if info is not None:
            info.dataset._rng = np.random.default_rng([base, worker_id])


def _try_probe(path: str) -> tuple[VideoInfo | None, str]:
    try:
        return probe(path), ""
    except VideoError as e:
        text = str(e)
        return None, text.split(": ", 1)[1] if text.startswith(path) else text
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"
