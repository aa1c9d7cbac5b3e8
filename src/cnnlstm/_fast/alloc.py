"""The process the ``cnnlstm`` command trains in: a faster allocator and transparent huge pages, chosen when the
process starts, so the command re-executes itself once with them (:func:`tune_command_process`).

A training step of a CNN over folded frames allocates activations of hundreds of MB. glibc maps every allocation
above its mmap threshold (32 MiB at most) fresh and unmaps it on free, so each step faults its activations in
again, 4 KiB at a time. The re-executed process runs with either

* mimalloc preloaded (``pip install cnnlstm[fast]`` installs it, from the cmeel-mimalloc wheel), told never to
  hand freed pages back (``MIMALLOC_PURGE_DELAY=-1``); or, without it,
* glibc with its mmap and trim thresholds raised, which keeps the buffers in its heap;

and with PyTorch's ``THP_MEM_ALLOC_ENABLE=1`` where the kernel offers huge pages: PyTorch then aligns allocations
of 2 MiB and more and advises the kernel to back them with 2 MiB pages, 512 times fewer faults. PyTorch reads that
variable at its first allocation, before any of cnnlstm runs, so only a fresh process can take it. Importing
cnnlstm changes nothing in the process. PyTorch's own launcher (``torch.backends.xeon.run_cpu``) preloads jemalloc
or tcmalloc the same way. ``CNNLSTM_NO_MALLOC_TUNING=1`` turns all of it off; the user's own settings stand.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["command_env", "fast_malloc_env", "huge_pages_available", "mimalloc_library", "tune_command_process"]

THP_SYSFS = Path("/sys/kernel/mm/transparent_hugepage/enabled")
GLIBC_THRESHOLDS = {"MALLOC_MMAP_THRESHOLD_": str(1 << 34), "MALLOC_TRIM_THRESHOLD_": str(1 << 34)}
MIMALLOC_OPTIONS = {"MIMALLOC_PURGE_DELAY": "-1"}
MARK = "CNNLSTM_MALLOC"  # set in the re-executed process: which allocator it was started with


def huge_pages_available() -> bool:
    """True on Linux with transparent huge pages in ``always`` or ``madvise`` mode."""
    try:
        return sys.platform.startswith("linux") and "[never]" not in THP_SYSFS.read_text()
    except OSError:
        return False


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


def fast_malloc_env(environ: dict[str, str] | None = None, argv: list[str] | None = None) -> dict[str, str] | None:
    """The environment to re-execute the command with for fast training steps, or None to run as it is.

    None off Linux, with ``CNNLSTM_NO_MALLOC_TUNING`` set, in a process already re-executed, or where the
    user preloads an allocator or sets glibc's thresholds themselves. Otherwise ``environ`` (default
    ``os.environ``) plus mimalloc's preload and options where cmeel-mimalloc is installed and the command
    (``argv``) does not name OpenVINO (whose CPU plugin aborts, "free(): invalid pointer", in a process with
    mimalloc preloaded), else plus glibc's raised thresholds; the user's own values of those options stand.
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
    lib = None if _names_openvino(argv or []) else mimalloc_library()
    if lib is not None:
        env["LD_PRELOAD"] = f"{lib}:{preload}" if preload else lib
        env.update({k: v for k, v in MIMALLOC_OPTIONS.items() if k not in env})
        env[MARK] = "mimalloc"
    else:
        env.update(GLIBC_THRESHOLDS)
        env[MARK] = "glibc"
    return env


def _names_openvino(argv: list[str]) -> bool:
    """Whether a command line asks for OpenVINO: ``--runtime openvino`` (or ``--runtime=openvino``)."""
    return any(a == "openvino" or a.endswith("=openvino") for a in argv)


def command_env(environ: dict[str, str] | None = None, argv: list[str] | None = None) -> dict[str, str] | None:
    """:func:`fast_malloc_env`, plus ``THP_MEM_ALLOC_ENABLE=1`` where huge pages are available and the user has
    not set it; None to run as it is."""
    env = fast_malloc_env(environ, argv)
    if env is not None and "THP_MEM_ALLOC_ENABLE" not in env and huge_pages_available():
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    return env


def tune_command_process() -> None:
    """Re-execute this process once in :func:`command_env`'s environment (the ``cnnlstm`` console script's first
    step); return without doing anything when there is nothing to tune or it cannot re-execute."""
    argv = list(getattr(sys, "orig_argv", [])) or [sys.executable, *sys.argv]
    env = command_env(argv=argv[1:])
    if env is None:
        return
    try:
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    except OSError:  # cannot re-execute: run as we are
        return
