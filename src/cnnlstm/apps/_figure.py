"""What every plot shares: a pyplot-free figure, one colour per class, titles that fit, saving without cuts."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import require

__all__ = ["class_colors", "fit_title", "new_figure", "save", "true_runs"]

GOLDEN = 0.6180339887498949  # hue step for more than 20 classes: neighbouring indices land far apart on the map


def new_figure(width: float, height: float) -> Any:
    """A matplotlib ``Figure`` of ``width`` x ``height`` inches on an Agg canvas, outside pyplot: no global
    backend switch, nothing left open when it goes out of scope."""
    require("matplotlib", "train", "plotting")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG cropped to what it draws (``bbox_inches="tight"``: no label or title is cut)."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.1)
    return Path(path)


def class_colors(n: int) -> list[str]:
    """One colour per class index, the same in every plot of a run with ``n`` classes.

    Classes 0-9 take matplotlib's ``tab10`` colours; with 11-20 classes, 10-19 take ``tab20``'s light shades
    (its dark shades are ``tab10``'s); past 20, the ``turbo`` map is stepped by the golden ratio so that
    neighbouring indices differ.

    >>> class_colors(12)[:2], class_colors(12)[10]
    (['#1f77b4', '#ff7f0e'], '#aec7e8')
    >>> class_colors(3) == class_colors(8)[:3]
    True
    """
    mpl = require("matplotlib", "train", "plotting")
    to_hex = mpl.colors.to_hex
    if n <= 10:
        return [to_hex(mpl.colormaps["tab10"](i)) for i in range(n)]
    if n <= 20:
        tab20 = mpl.colormaps["tab20"]
        return [to_hex(tab20(2 * i if i < 10 else 2 * (i - 10) + 1)) for i in range(n)]
    turbo = mpl.colormaps["turbo"]
    return [to_hex(turbo(0.05 + 0.9 * ((i * GOLDEN) % 1.0))) for i in range(n)]


def fit_title(fig: Any, ax: Any, text: str, fontsize: float = 10) -> Any:
    """Set ``ax``'s title, wrapped (at spaces and after a ``/``; a word too long for a line anywhere) until every
    line fits across the figure when centred over ``ax``; explicit newlines are kept. Returns the title's
    ``Text``."""
    title = ax.set_title(text, fontsize=fontsize)
    if not text:
        return title
    renderer = fig.canvas.get_renderer()
    box = ax.get_position()  # figure fractions
    half = min(box.x0 + box.width / 2, 1 - box.x0 - box.width / 2)  # room each side of the axes' centre
    room = 2 * half * fig.bbox.width * 0.98  # pixels
    width = max(len(line) for line in text.splitlines())
    while width > 8 and title.get_window_extent(renderer).width > room:
        width = int(width * 0.85)
        title.set_text(_wrap(text, width))
    return title


def _wrap(text: str, width: int) -> str:
    """Each line of ``text`` wrapped at ``width`` characters; long paths break after a ``/``."""
    out = []
    for line in text.splitlines():
        spaced = line.replace("/", "/\0 ")  # a marked space after each slash: a place to break, removed after
        wrapped = textwrap.wrap(spaced, width, break_on_hyphens=False) or [""]
        out += [w.replace("\0 ", "").replace("\0", "") for w in wrapped]
    return "\n".join(out)


def true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The ``[start, end)`` step ranges where ``mask`` is true.

    >>> true_runs(np.array([0, 1, 1, 0, 0, 1]))
    [(1, 3), (5, 6)]
    """
    m = np.concatenate([[0], np.asarray(mask, dtype=bool).astype(np.int8), [0]])
    edges = np.diff(m)  # (T + 1,): +1 where a run starts, -1 one past where it ends
    return [(int(s), int(e)) for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))]
