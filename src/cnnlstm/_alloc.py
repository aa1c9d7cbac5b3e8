"""Allocation tuning for training on the CPU: transparent huge pages for PyTorch's large tensors, asked for
before PyTorch starts, and the allocator the ``cnnlstm`` command re-executes itself with (below).

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


# --- the allocator the ``cnnlstm`` command re-executes itself with ---------------------------------------
#
# Even with huge pages, glibc maps every allocation above its mmap threshold (32 MiB at most) fresh and
# unmaps it on free, so each training step faults its activations in again. The command therefore
# re-executes itself once (the allocator is chosen when the process starts) with either
#
# * mimalloc preloaded (``pip install cnnlstm[fast]`` installs it, from the cmeel-mimalloc wheel), told
#   never to hand freed pages back (MIMALLOC_PURGE_DELAY=-1): measured on the reference model at batch 32,
#   3.2-3.6 s per training step from the second step on and 5.3 GB peak (3.6 GB since the chunked
#   training block of cnnlstm.backbones); or, without it,
# * glibc with its mmap and trim thresholds raised, which keeps the buffers in its heap: 3.5-5.3 s per
#   step, settling only after 4-5 steps, at 7.8 GB peak (freed blocks stay in the heap and fragment it).
#
# Huge pages alone (importing cnnlstm first) were 5.5-8.6 s per step at 3.6 GB. PyTorch's own launcher
# (torch.backends.xeon.run_cpu) preloads jemalloc or tcmalloc the same way. bench/speed.py measures it.

GLIBC_THRESHOLDS = {"MALLOC_MMAP_THRESHOLD_": str(1 << 34), "MALLOC_TRIM_THRESHOLD_": str(1 << 34)}
MIMALLOC_OPTIONS = {"MIMALLOC_PURGE_DELAY": "-1"}
MARK = "CNNLSTM_MALLOC"  # set in the re-executed process: which allocator it was started with


def mimalloc_library() -> str | None:
    """Path of ``libmimalloc.so`` from the cmeel-mimalloc wheel (``cnnlstm[fast]``), or None without it (or
    where its path holds a space or a colon, which ``LD_PRELOAD`` cannot take)."""
    from importlib.metadata import PackageNotFoundError, files

    try:
        found = [f for f in files("cmeel-mimalloc") or () if f.name == "libmimalloc.so"]
    except PackageNotFoundError:
        return None
    for f in found:
        path = Path(str(f.locate()))
        # LD_PRELOAD splits on spaces and colons, with no escaping: such a path cannot be preloaded
        if path.is_file() and not any(c.isspace() or c == ":" for c in str(path)):
            return str(path)
    return None


def fast_malloc_env(environ: dict[str, str] | None = None) -> dict[str, str] | None:
    """The environment to re-execute the command with for fast training steps, or None to run as it is.

    None off Linux, with ``CNNLSTM_NO_MALLOC_TUNING`` set, in a process already re-executed, or where the
    user preloads an allocator or sets glibc's thresholds themselves. Otherwise ``environ`` (default
    ``os.environ``) plus mimalloc's preload and options where cmeel-mimalloc is installed, else plus
    glibc's raised thresholds; the user's own values of those options stand.
    """
    env = dict(os.environ if environ is None else environ)
    preload = env.get("LD_PRELOAD", "")
    if (
        not sys.platform.startswith("linux")
        or env.get("CNNLSTM_NO_MALLOC_TUNING")
        or MARK in env
        or "malloc" in preload
        or any(k in env for k in GLIBC_THRESHOLDS)
    ):
        return None
    lib = mimalloc_library()
    if lib is not None:
        env["LD_PRELOAD"] = f"{lib}:{preload}" if preload else lib
        env.update({k: v for k, v in MIMALLOC_OPTIONS.items() if k not in env})
        env[MARK] = "mimalloc"
    else:
        env.update(GLIBC_THRESHOLDS)
        env[MARK] = "glibc"
    return env
