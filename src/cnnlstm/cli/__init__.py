"""The ``cnnlstm`` command: a thin skin over the library. Each command parses, calls one function, prints.

Options that restate a library dataclass are generated from it (:mod:`cnnlstm.cli._options`); library errors
become one line through one decorator (:func:`cnnlstm.cli._app.library_errors`).
"""

from __future__ import annotations

import os
import sys

from . import doctor, export, infer, train  # noqa: F401  (each registers its commands on the group)
from ._app import main

__all__ = ["main", "run"]


def _fast_malloc() -> None:
    """Re-execute this process once with a faster allocator for training steps (Linux: mimalloc where
    ``cnnlstm[fast]`` installed it, else glibc's thresholds raised; see ``cnnlstm._alloc``). Opt out with
    ``CNNLSTM_NO_MALLOC_TUNING=1``."""
    from .._alloc import fast_malloc_env

    env = fast_malloc_env()
    if env is None:
        return
    argv = list(getattr(sys, "orig_argv", [])) or [sys.executable, *sys.argv]
    try:
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    except OSError:  # cannot re-execute: run as we are
        return


def run() -> None:
    """The ``cnnlstm`` console script: tune the allocator, then the commands."""
    _fast_malloc()
    main()
