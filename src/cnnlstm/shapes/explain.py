"""``explain``: a table of every module call of a dry run, with its input and output shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ShapeError
from ._dry import check_shape, first_paths, first_tensor_shape, hooked, placeholders, run, shapes_of
from .findings import format_shape
from .guard import diagnosed

__all__ = ["Explanation", "Row", "explain"]


@dataclass
class Row:
    """One module call of an :func:`explain` table."""

    path: str
    type: str
    input: Any
    output: Any
    params: int
    depth: int
    calls: int = 1


@dataclass
class Explanation:
    """The :func:`explain` table: ``rows`` in call order, printable with ``str()``.

    Where the model cannot run on the shape, ``error`` says why (with the fix) and the table stops at the module that
    failed (``failed``, its path), marked in the table."""

    rows: list[Row]
    output: Any
    error: str | None = None
    failed: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def __repr__(self) -> str:  # a REPL shows the table, not the dataclass
        return str(self)

    @property
    def total_params(self) -> int:
        return self.rows[0].params if self.rows else 0

    def __str__(self) -> str:
        header = ("module", "type", "input", "output", "params")
        body = [
            (
                "  " * r.depth + (r.path or "(model)"),
                r.type + (f" x{r.calls}" if r.calls > 1 else ""),
                format_shape(r.input),
                format_shape(r.output),
                f"{r.params:,}",
            )
            for r in self.rows
        ]
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(5)]
        lines = [
            "  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
            for line in [header, *body]
        ]
        lines.insert(1, "-" * len(lines[0]))
        if self.error is not None:
            at = next((i for i, r in enumerate(self.rows) if r.path == self.failed and r.output is None), None)
            if at is not None:
                lines[at + 2] += "  <- failed here"
            lines.append(f"error: {self.error}")
        return "\n".join(lines)


def explain(model: nn.Module, input_shape: tuple, *, dtype: torch.dtype = torch.float32, **kwargs) -> Explanation:
    """A table, one row per module call: path, type, input shape, output shape, parameters.

    Args:
        model: any module.
        input_shape: the full input shape, batch included (or a tensor or an array: its shape).
        kwargs: further keyword arguments of the forward.

    A model that cannot run on the shape gives the table up to the module that failed, marked, and the error with
    its fix (``Explanation.error``); it does not raise.

    >>> print(explain(nn.Sequential(nn.Linear(4, 8), nn.ReLU()), (2, 4)))
    module   type        input   output  params
    -------------------------------------------
    (model)  Sequential  (2, 4)  (2, 8)      40
      0      Linear      (2, 4)  (2, 8)      40
      1      ReLU        (2, 8)  (2, 8)       0
    """
    shape = check_shape(input_shape, "explain")
    rows: dict[int, Row] = {}
    names = first_paths(model)

    def pre(m: nn.Module, args: tuple) -> None:
        if id(m) in rows:
            rows[id(m)].calls += 1
            return
        path = names.get(id(m), "?")
        params = sum(p.numel() for p in m.parameters())
        rows[id(m)] = Row(path, type(m).__name__, first_tensor_shape(args), None, params, _depth(path))

    def post(m: nn.Module, args: tuple, out: Any) -> None:
        if rows[id(m)].output is None:
            rows[id(m)].output = shapes_of(out)

    handles = hooked(model, pre, post)
    try:
        with diagnosed(model, shape, dtype=dtype, **kwargs):
            out = run(model, placeholders(shape, 5), dtype, kwargs)
    except ShapeError as e:
        unfinished = [r for r in rows.values() if r.output is None]  # entered, never left: the last is the culprit
        return Explanation(list(rows.values()), None, str(e), unfinished[-1].path if unfinished else None)
    finally:
        for h in handles:
            h.remove()
    return Explanation(list(rows.values()), shapes_of(out))


def _depth(path: str) -> int:
    return path.count(".") + (1 if path else 0)
