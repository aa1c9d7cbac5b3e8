"""The ``cnnlstm`` command: a thin skin over the library. Each command parses, calls one function, prints.

Options that restate a library dataclass are generated from it (:mod:`cnnlstm.cli._options`); library errors
become one line through one decorator (:func:`cnnlstm.cli._app.library_errors`).
"""

from __future__ import annotations

from . import doctor, export, infer, launch, train  # noqa: F401  (each registers its commands on the group)
from ._app import main

__all__ = ["main", "run"]


def run() -> None:
    """The ``cnnlstm`` console script: tune the allocator (re-executing once, see :mod:`cnnlstm._fast.alloc`), then
    the commands."""
    from .._fast.alloc import tune_command_process

    tune_command_process()
    main()
