"""Time series: ``.npz``/``.npy`` arrays, CSV (long or wide), and the UCR/UEA sets aeon ships.

Series keep their own lengths (variable-length sets are padded per batch and passed with
``lengths``, never truncated). Per-channel normalisation is fitted on the training split only.

Sources:

- ``aeon:NAME``: a classification set shipped inside the ``aeon`` wheel (``GunPoint``,
  ``ArrowHead``, ``ItalyPowerDemand``, ``OSULeaf``, ``BasicMotions``, ``JapaneseVowels``, ...),
  on its published train/test split; nothing downloads.
- ``file.npz``: ``x`` ``(N, T, F)`` (or ``(N, T)``) and ``y`` ``(N,)``, optionally ``lengths``; or
  ``x_train, y_train, x_test, y_test`` for a given split.
- ``file.npy``: ``(N, T, F)`` with the labels in ``file_labels.npy`` beside it.
- ``file.csv``: long format, one row per time step with columns ``id``, ``label`` and one column per
  feature (rows in time order, or a ``t``/``time``/``timestamp`` column to order them); or wide
  format, one row per univariate series with a ``label`` column and the values in the others.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, require

__all__ = ["Normalizer", "SeriesDataset", "SeriesSet", "collate_series", "is_series_source", "load_sequence",
           "load_series", "save_sequence"]  # fmt: skip

_TIME_COLUMNS = ("t", "time", "timestamp", "step")


@dataclass
class SeriesSet:
    """Labelled series: ``x[i]`` is ``(T_i, F)`` float32; ``y[i]`` indexes ``classes``."""

    x: list[np.ndarray]
    y: np.ndarray
    classes: list[str]
    name: str = ""

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(s) for s in self.x])

    @property
    def features(self) -> int:
        return self.x[0].shape[1]

    def subset(self, idx: Sequence[int]) -> SeriesSet:
        return SeriesSet([self.x[i] for i in idx], self.y[list(idx)], self.classes, self.name)


def is_series_source(source: str | Path) -> bool:
    """True for ``aeon:NAME`` and ``.npz``/``.npy`` files, and for CSV files that are not video manifests."""
    s = str(source)
    if s.startswith("aeon:") or s.endswith((".npz", ".npy")):
        return True
    if s.endswith(".csv") and Path(s).is_file():
        with open(s, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
        return "path" not in header
    return False


def _labels(raw: Sequence[Any], classes: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    names = [str(v) for v in raw]
    if classes is None:
        uniq = sorted(set(names), key=lambda v: (0, float(v)) if _is_number(v) else (1, v))
        classes = uniq
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise DataError(f"labels {unknown} are not among the training split's classes {classes}")
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[n] for n in names], dtype=np.int64), classes


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _check_values(x: list[np.ndarray], where: str, names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Every series ``(T, F)`` with the first's ``F``, not empty, finite; ``names`` say where each one is (a CSV's
    line or id), else its index ``x[i]`` (from 0, as in the array)."""
    if not x:
        raise DataError(f"{where}: no series")
    f = x[0].shape[1]
    for i, s in enumerate(x):
        name = names[i] if names else f"series x[{i}]"
        if s.ndim != 2 or s.shape[1] != f:
            raise DataError(f"{where}: {name} is {s.shape}, the first is (T, F={f}): every series needs F={f}")
        if len(s) == 0:
            raise DataError(f"{where}: {name} is empty")
        bad = np.argwhere(~np.isfinite(s))
        if len(bad):
            t, c = bad[0]
            raise DataError(
                f"{where}: {name} has {len(bad)} NaN/inf value(s), the first at step {t} (from 0), feature {c}: "
                "fill or drop them first (e.g. numpy.nan_to_num, or interpolate)"
            )
    return [np.ascontiguousarray(s, dtype=np.float32) for s in x]


def _from_array(x: np.ndarray, lengths: np.ndarray | None, where: str) -> list[np.ndarray]:
    x = np.asarray(x)
    if x.dtype == object:
        return [np.asarray(s, dtype=np.float32).reshape(len(s), -1) for s in x]
    if x.ndim == 2:
        x = x[:, :, None]  # (N, T) univariate -> (N, T, 1)
    if x.ndim != 3:
        raise DataError(f"{where}: series arrays are (N, T, F) or (N, T), got shape {x.shape}")
    if lengths is None:
        return list(x)
    lengths = np.asarray(lengths)
    if lengths.shape != (len(x),) or lengths.min() < 1 or lengths.max() > x.shape[1]:
        raise DataError(f"{where}: lengths must be (N,) = ({len(x)},) with values in 1..{x.shape[1]}")
    return [x[i, : int(n)] for i, n in enumerate(lengths)]


def _aeon(name: str, split: str) -> tuple[list[np.ndarray], list[str]]:
    require("aeon", "series", f"the aeon data set {name!r}")
    import aeon
    from aeon.datasets import load_from_ts_file

    folder = Path(aeon.__file__).parent / "datasets" / "data" / name
    path = folder / f"{name}_{split.upper()}.ts"
    if not path.is_file():
        shipped = sorted(p.name for p in folder.parent.iterdir() if any(p.glob("*_TRAIN.ts")))
        raise DataError(
            f"aeon:{name} is not shipped with aeon {aeon.__version__} (no {path.name}); "
            f"classification sets it ships: {', '.join(shipped)}"
        )
    x, y = load_from_ts_file(str(path))
    series = [np.asarray(s, dtype=np.float32).T for s in x]  # (C, T) -> (T, F)
    return series, [str(v) for v in y]


def _csv(path: Path, labelled: bool = True) -> tuple[list[np.ndarray], list[str], list[str]]:
    """The series, their labels ('' where unlabelled and none given), where each is (line N, or id X)."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f, restkey="__extra__"))
    if not rows:
        raise DataError(f"{path}: empty CSV")
    for line, r in enumerate(rows, start=2):
        if "__extra__" in r:
            raise DataError(
                f"{path} line {line}: {len(r['__extra__'])} more cell(s) than the header has columns: "
                "give every value column a name in the header"
            )
        if not (r.get("label") or "").strip() and "label" in r:
            raise DataError(f"{path} line {line}: empty label")
    cols = list(rows[0])
    if not labelled and "label" not in cols:
        rows, cols = [{"label": "", **r} for r in rows], ["label", *cols]
    if "label" not in cols:
        raise DataError(
            f"{path}: a series CSV needs a 'label' column (long format: id,label,feature...; "
            "wide format: label,v0,v1,...)"
        )

    def num(v: str, line: int, col: str) -> float:
        try:
            return float(v) if v not in ("", None) else float("nan")
        except ValueError:
            raise DataError(f"{path} line {line}: column {col!r} holds {v!r}, not a number") from None

    if "id" in cols:  # long: one row per step
        tcol = next((c for c in _TIME_COLUMNS if c in cols), None)
        feats = [c for c in cols if c not in ("id", "label", tcol)]
        if not feats:
            raise DataError(f"{path}: no feature columns besides id/label")
        groups: dict[str, list] = {}
        labels: dict[str, str] = {}
        for line, r in enumerate(rows, start=2):
            sid = r["id"]
            if sid in labels and labels[sid] != r["label"]:
                raise DataError(
                    f"{path} line {line}: series {sid!r} changes label from {labels[sid]!r} to {r['label']!r}"
                )
            labels[sid] = r["label"]
            t = num(r[tcol], line, tcol) if tcol else len(groups.get(sid, []))
            groups.setdefault(sid, []).append((t, [num(r[c], line, c) for c in feats]))
        x = [np.array([v for _, v in sorted(g, key=lambda p: p[0])], dtype=np.float32) for g in groups.values()]
        return x, [labels[k] for k in groups], [f"series id {k!r}" for k in groups]
    values = [c for c in cols if c != "label"]  # wide: one row per series
    x = []
    for line, r in enumerate(rows, start=2):
        v = [r[c] for c in values]
        if None in v:  # the row ends before the header does: a cut line, not a deliberately shorter series
            raise DataError(
                f"{path} line {line}: {1 + v.index(None)} cell(s) where the header has {len(cols)} columns: a shorter "
                "series keeps its commas and leaves its last cells empty (label,1.0,2.0,,)"
            )
        while v and v[-1] == "":  # shorter series leave their last cells empty
            v.pop()
        x.append(np.array([num(a, line, c) for a, c in zip(v, values)], dtype=np.float32)[:, None])
    return x, [r["label"] for r in rows], [f"the series on line {line}" for line in range(2, len(rows) + 2)]


@contextlib.contextmanager
def _ragged(path: Path):
    """numpy refuses object arrays without pickle (as it should): say what to do instead."""
    try:
        yield
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise
        raise DataError(
            f"{path}: x is a ragged (object) array, which loading without pickle refuses: pad the "
            "series to (N, T_max, F) and store their lengths in a 'lengths' array"
        ) from None


def load_series(source: str | Path, split: str | None = "train", classes: list[str] | None = None) -> SeriesSet:
    """Load labelled series from ``source`` (see the module's docstring for the formats).

    Args:
        source: ``aeon:NAME``, a ``.npz``/``.npy``/``.csv`` file.
        split: ``"train"`` or ``"test"`` where the source has splits (aeon, ``x_train``...); ignored otherwise.
        classes: the class names to index labels by (the training split's); None: sorted from the data.

    Raises:
        DataError: a missing file, a malformed array or CSV, NaNs, unknown labels; the message says which.
    """
    s = str(source)
    names = None  # where each series is, for messages: a CSV's lines or ids
    if s.startswith("aeon:"):
        name = s.split(":", 1)[1]
        x, raw = _aeon(name, split or "train")
    else:
        path = Path(s)
        if not path.is_file():
            raise DataError(f"{s}: no such file (series come from aeon:NAME, .npz, .npy or .csv)")
        name = path.stem
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z, _ragged(path):
                keys = set(z.files)
                if {f"x_{split}", f"y_{split}"} <= keys:
                    xa, ya, la = z[f"x_{split}"], z[f"y_{split}"], z.get(f"lengths_{split}")
                elif {"x", "y"} <= keys:
                    xa, ya, la = z["x"], z["y"], z.get("lengths")
                else:
                    raise DataError(
                        f"{path}: an .npz needs arrays x and y (or x_{split}, y_{split}); it has {sorted(keys)}"
                    )
                x, raw = _from_array(xa, la, str(path)), list(ya)
        elif path.suffix == ".npy":
            labels = next(
                (p for p in (path.with_name(f"{path.stem}_labels.npy"), path.with_name("labels.npy")) if p.is_file()),
                None,
            )
            if labels is None:
                raise DataError(
                    f"{path}: put the labels in {path.stem}_labels.npy beside it (or use an .npz with x, y)"
                )
            x, raw = _from_array(np.load(path, allow_pickle=False), None, str(path)), list(np.load(labels))
        elif path.suffix == ".csv":
            x, raw, names = _csv(path)
        else:
            raise DataError(f"{path}: series are read from .npz, .npy or .csv, not {path.suffix}")
    if np.asarray(raw).ndim == 2 and np.asarray(raw).shape[1:] == (1,):  # (N, 1) labels
        raw = list(np.asarray(raw).reshape(len(raw), -1)[:, 0])
    if np.asarray(raw).ndim > 1:
        raise DataError(f"{s}: labels must be one per series, (N,), got shape {np.asarray(raw).shape}")
    if len(x) != len(raw):
        raise DataError(f"{s}: {len(x)} series but {len(raw)} labels")
    x = _check_values(x, s, names)
    y, classes = _labels(raw, classes)
    return SeriesSet(x, y, classes, name)


@dataclass
class Normalizer:
    """Per-channel ``(x - mean) / std``, fitted on the valid steps of the training series only."""

    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, series: Sequence[np.ndarray]) -> Normalizer:
        allv = np.concatenate(list(series), axis=0)  # (sum T_i, F)
        std = allv.std(axis=0)
        return cls(allv.mean(axis=0).tolist(), np.where(std > 1e-8, std, 1.0).tolist())

    def __call__(self, s: np.ndarray) -> np.ndarray:
        return ((s - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)).astype(np.float32)


class SeriesDataset(torch.utils.data.Dataset):
    """``dataset[i]`` → ``{"series": (T_i, F), "label", "length", "index"}``, normalised."""

    def __init__(self, data: SeriesSet, normalizer: Normalizer | None = None):
        self.data = data
        self.normalizer = normalizer or Normalizer.fit(data.x)
        self.classes = data.classes
        self.skipped: list[tuple[str, str]] = []

    @property
    def labels(self) -> list[int]:
        return self.data.y.tolist()

    def __len__(self) -> int:
        return len(self.data.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = torch.from_numpy(self.normalizer(self.data.x[i]))
        return {"series": s, "label": int(self.data.y[i]), "length": len(s), "index": i}


def collate_series(batch: list[dict[str, Any]], pad_to: int | None = None) -> dict[str, Any]:
    """Pad series to the longest (at least ``pad_to`` steps): ``{"series": (N, T, F), "label", "lengths" (None if
    all are T long), "index", ...}``."""
    lengths = torch.tensor([b["length"] for b in batch])
    t = max(int(lengths.max()), pad_to or 0)
    f = batch[0]["series"].shape[1]
    x = torch.zeros(len(batch), t, f)
    for i, b in enumerate(batch):
        x[i, : b["length"]] = b["series"]
    return {
        "series": x,
        "label": torch.tensor([b["label"] for b in batch]),
        "lengths": None if bool((lengths == t).all()) else lengths,
        "index": torch.tensor([b["index"] for b in batch]),
        "skipped": [],
    }


def save_sequence(path: str | Path, values: np.ndarray, is_anomaly: np.ndarray | None = None) -> Path:
    """Write one long series as the CSV that :func:`load_sequence` and ``cnnlstm anomaly`` read.

    Args:
        path: the CSV to write.
        values: ``(T,)`` or ``(T, F)``; the columns are named ``x0``... (``value`` for one channel).
        is_anomaly: optional ``(T,)`` 0/1 labels, written as the ``is_anomaly`` column that scoring reads.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[:, None] if v.ndim == 1 else v
    if v.ndim != 2:
        raise DataError(f"a series to save is (T,) or (T, F), got {v.shape}")
    if is_anomaly is not None and len(is_anomaly) != len(v):
        raise DataError(f"is_anomaly has {len(is_anomaly)} labels for {len(v)} steps")
    names = ["value"] if v.shape[1] == 1 else [f"x{i}" for i in range(v.shape[1])]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names + (["is_anomaly"] if is_anomaly is not None else []))
        for t, row in enumerate(v):
            w.writerow([float(x) for x in row] + ([int(is_anomaly[t])] if is_anomaly is not None else []))
    return Path(path)


def load_sequence(source: str | Path) -> tuple[np.ndarray, list[str]]:
    """One long series for forecasting: ``(T, F)`` float32 values and the channel names.

    Sources: ``aeon:NAME`` for a forecasting series aeon ships (``Airline``, ``ShampooSales``, ``Lynx``, ...),
    a CSV (numeric columns are the channels; a date or other text column is dropped), or ``.npy`` ``(T,)``/``(T, F)``.
    """
    s = str(source)
    if s.startswith("aeon:"):
        require("aeon", "series", f"the aeon series {s!r}")
        import aeon

        name = s.split(":", 1)[1]
        path = Path(aeon.__file__).parent / "datasets" / "data" / name / f"{name}.csv"
        if not path.is_file():
            raise DataError(f"{s}: aeon {aeon.__version__} ships no {name}/{name}.csv")
    else:
        path = Path(s)
        if not path.is_file():
            raise DataError(f"{s}: no such file (a series to forecast is aeon:NAME, a .csv or a .npy)")
    if path.suffix == ".npy":
        v = np.load(path, allow_pickle=False).astype(np.float32)
        v = v[:, None] if v.ndim == 1 else v
        if v.ndim != 2:
            raise DataError(f"{path}: a series to forecast is (T,) or (T, F), got {v.shape}")
        names = [f"x{i}" for i in range(v.shape[1])]
    elif path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise DataError(f"{path}: empty CSV")
        names = [c for c in rows[0] if all(_is_number(r[c]) for r in rows if r[c] not in ("", None))]
        if not names:
            raise DataError(f"{path}: no numeric column to forecast")
        v = np.array([[float(r[c]) if r[c] not in ("", None) else np.nan for c in names] for r in rows], np.float32)
    else:
        raise DataError(f"{path}: a series to forecast is a .csv or a .npy, not {path.suffix}")
    _check_values([v], s)
    return v, names
