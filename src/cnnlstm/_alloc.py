"""Transparent huge pages for PyTorch's large CPU tensors, asked for before PyTorch starts.

A training step of a CNN over folded frames allocates activations of hundreds of MB, and glibc serves
each with fresh pages from the kernel (above its mmap threshold, at most 32 MiB): every step faults them
in 4 KiB at a time. PyTorch's ``THP_MEM_ALLOC_ENABLE=1`` aligns allocations of 2 MiB and more and advises
the kernel to back them with 2 MiB pages, 512 times fewer faults. On the reference model at batch 32
(bench/speed.py) a training step went from 8.1-8.5 s to 4.8-5.1 s at the same peak memory (4.8 GB).

PyTorch reads the variable once, at its first allocation, so it is set only when ``cnnlstm`` is imported
before ``torch`` (as the ``cnnlstm`` command does), never overriding a value the user set, and not
at all with ``CNNLSTM_NO_MALLOC_TUNING=1`` or where the kernel has huge pages switched off.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

THP_SYSFS = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def huge_pages_available() -> bool:
    """True on Linux with transparent huge pages in ``always`` or ``madvise`` mode."""
    try:
        return sys.platform.startswith("linux") and "[never]" not in THP_SYSFS.read_text()
    except OSError:
        return False


def ask_for_huge_pages() -> None:
    """Set ``THP_MEM_ALLOC_ENABLE=1`` if it can still take effect and the user has not set it."""
    if "torch" not in sys.modules and not os.environ.get("CNNLSTM_NO_MALLOC_TUNING") and huge_pages_available():
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


ask_for_huge_pages()  # on import of cnnlstm, before its own import of torch
