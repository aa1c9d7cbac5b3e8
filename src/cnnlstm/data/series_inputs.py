"""Series to predict: the inputs of a series run without labels, each named for the messages and the output."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .series import _check_values, _csv, _from_array, _ragged, load_series

__all__ = ["unlabelled_series"]


def unlabelled_series(source: str | Path, split: str = "test") -> tuple[list[np.ndarray], list[str]]:
    """The series in ``source`` and a name for each; labels, where the source has them, are ignored.

    Args:
        source: ``aeon:NAME`` (its ``split``), an ``.npz`` (``x_{split}`` or ``x``, with ``lengths`` where given),
            an ``.npy`` ``(N, T, F)`` or ``(N, T)``, or a series CSV (long or wide; its ``label`` column optional).
        split: the split of a source that has splits.

    Returns:
        ``(series, names)``: ``(T_i, F)`` float32 arrays and ``"SOURCE #i"`` (a CSV's ``line N`` / ``id X``).

    Raises:
        DataError: a missing file, an unreadable array or CSV, NaNs; the message says which.
    """
    s = str(source)
    if s.startswith("aeon:"):
        x = load_series(s, split).x
        return x, [f"{s} {split} #{i}" for i in range(len(x))]
    path = Path(s)
    if not path.is_file():
        raise DataError(f"{s}: no such file (series come from aeon:NAME, .npz, .npy or .csv)")
    names = None
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z, _ragged(path):
            key = next((k for k in (f"x_{split}", "x") if k in z.files), None)
            if key is None:
                raise DataError(f"{path}: an .npz of series to predict holds x (or x_{split}); it has {z.files}")
            lengths = z.get(f"lengths_{split}" if key != "x" else "lengths")
            x = _from_array(z[key], lengths, str(path))
    elif path.suffix == ".npy":
        with _ragged(path):
            x = _from_array(np.load(path, allow_pickle=False), None, str(path))
    elif path.suffix == ".csv":
        x, _, names = _csv(path, labelled=False)
    else:
        raise DataError(f"{path}: series are read from .npz, .npy or .csv, not {path.suffix}")
    x = _check_values(x, s, names)
    return x, [f"{s} {names[i]}" if names else f"{s} #{i}" for i in range(len(x))]
