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

import functools
import os
import sys
from pathlib import Path

__all__ = [
    "command_env",
    "fast_malloc_env",
    "hint_untuned_training",
    "huge_pages_available",
    "launch_env",
    "mimalloc_library",
    "raise_heap_threshold",
    "top_pin",
    "tune_command_process",
    "tune_malloc",
    "untuned",
]

THP_SYSFS = Path("/sys/kernel/mm/transparent_hugepage/enabled")
GLIBC_THRESHOLDS = {"MALLOC_MMAP_THRESHOLD_": str(1 << 34), "MALLOC_TRIM_THRESHOLD_": str(1 << 34)}
MIMALLOC_OPTIONS = {"MIMALLOC_PURGE_DELAY": "-1"}
MARK = "CNNLSTM_MALLOC"  # set in the re-executed process: which allocator it was started with
# mallopt(3) parameters, and the largest value its C int takes (2 GiB): allocations up to it stay in the heap
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MALLOPT_MAX = (1 << 31) - 1
ALLOCATORS = ("auto", "glibc", "mimalloc", "none")  # `cnnlstm run --allocator`
HINT_BYTES = 8 << 20  # frames per training call from which glibc's default settings cost a step its speed
RAISE_BYTES = 31 << 20  # mapped and freed once: glibc's adaptive mmap threshold rises to it (at most 32 MiB)
_STATE = {"tuned": False, "hinted": False, "raised": False}


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


def fast_malloc_env(
    environ: dict[str, str] | None = None, argv: list[str] | None = None, mimalloc: bool = True
) -> dict[str, str] | None:
    """The environment to re-execute the command with for fast training steps, or None to run as it is.

    None off Linux, with ``CNNLSTM_NO_MALLOC_TUNING`` set, in a process already re-executed, or where the
    user preloads an allocator or sets glibc's thresholds themselves. Otherwise ``environ`` (default
    ``os.environ``) plus mimalloc's preload and options where cmeel-mimalloc is installed, ``mimalloc`` is
    True and the command (``argv``) does not name OpenVINO (whose CPU plugin aborts, "free(): invalid pointer",
    in a process with mimalloc preloaded), else plus glibc's raised thresholds; the user's own values of those
    options stand.
    """
    env = dict(os.environ if environ is None else environ)
    preload = env.get("LD_PRELOAD", "")
    if not sys.platform.startswith("linux") or _left_alone(env):
        return None
    lib = None if not mimalloc or _names_openvino(argv or []) else mimalloc_library()
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


def _left_alone(env: dict[str, str] | os._Environ) -> bool:
    """Whether a process with ``env`` keeps its allocator as it is: tuning turned off, the command's re-executed
    process, or an allocator or glibc thresholds of the user's own."""
    return bool(
        env.get("CNNLSTM_NO_MALLOC_TUNING")
        or MARK in env
        or "malloc" in env.get("LD_PRELOAD", "")
        or any(k in env for k in GLIBC_THRESHOLDS)
    )


def command_env(
    environ: dict[str, str] | None = None, argv: list[str] | None = None, mimalloc: bool = True
) -> dict[str, str] | None:
    """:func:`fast_malloc_env`, plus ``THP_MEM_ALLOC_ENABLE=1`` where huge pages are available and the user has
    not set it; None to run as it is."""
    env = fast_malloc_env(environ, argv, mimalloc)
    if env is not None and "THP_MEM_ALLOC_ENABLE" not in env and huge_pages_available():
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    return env


def tune_malloc() -> bool:
    """Keep freed memory in this process's heap from now on: glibc's mmap and trim thresholds raised to 2 GiB
    with ``mallopt(3)``, the in-process form of what the ``cnnlstm`` command and ``cnnlstm run`` start with.

    A documented opt-in for a training script of your own (``import cnnlstm; cnnlstm.tune_malloc()``, first
    thing): each training step then reuses its activations' memory instead of faulting it in again (on a Zen 5,
    2 cores, the reference model's step at batch 8 went from 230,000 minor page faults to 1, and 1.30 s to 0.95 s).
    The cost is that the process keeps its peak memory instead of handing it back. Huge pages and mimalloc need
    a fresh process: ``cnnlstm run script.py``. Importing cnnlstm never calls this.

    Returns True when the thresholds were raised; False, changing nothing, off glibc, with
    ``CNNLSTM_NO_MALLOC_TUNING`` set, or where the process already runs with an allocator or thresholds of its
    own (a preload, ``MALLOC_*_THRESHOLD_``, or the ``cnnlstm`` command's re-executed process).
    """
    import ctypes

    if _STATE["tuned"]:
        return True
    if not untuned():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # trim first: a raised mmap threshold alone would still hand the heap's top back above the trim threshold
    _STATE["tuned"] = bool(mallopt(M_TRIM_THRESHOLD, MALLOPT_MAX)) and bool(mallopt(M_MMAP_THRESHOLD, MALLOPT_MAX))
    return _STATE["tuned"]


@functools.cache
def _glibc() -> bool:
    import platform

    return platform.libc_ver()[0] == "glibc"


def untuned() -> bool:
    """True in a glibc process that trains with glibc's default thresholds: no :func:`tune_malloc`, launcher,
    preload or settings of the user's own, and no ``CNNLSTM_NO_MALLOC_TUNING``."""
    return not (_STATE["tuned"] or not _glibc() or _left_alone(os.environ))


def hint_untuned_training(frame_bytes: int) -> None:
    """Say once per process, as a warning, that training batches of ``frame_bytes`` (the frames of one call)
    run slower than they could with glibc's default settings, and what to do; nothing for small batches (whose
    activations stay under glibc's thresholds) or in a tuned process."""
    if _STATE["hinted"] or frame_bytes < HINT_BYTES or not untuned():
        return
    _STATE["hinted"] = True
    import warnings

    warnings.warn(
        "cnnlstm: training on the CPU with glibc's default allocator settings, which map each step's activations "
        "afresh and fault them in again (a 1.5x slower step, measured on the reference model). Call "
        "cnnlstm.tune_malloc() first thing in your script, or start it with `cnnlstm run script.py`; "
        "CNNLSTM_NO_MALLOC_TUNING=1 silences this.",
        stacklevel=2,
    )


def launch_env(argv: list[str], environ: dict[str, str] | None = None) -> dict[str, str] | None:
    """The environment ``cnnlstm run [--allocator A] TARGET ...`` re-executes with (``argv`` from ``run`` on), or
    None to run as it is: ``auto`` and ``glibc`` raise glibc's thresholds (safe beside every library a script
    may load; OpenVINO's CPU plugin aborts under a preloaded mimalloc), ``mimalloc`` preloads it where
    ``cnnlstm[fast]`` installed it, ``none`` changes nothing; huge pages as the command takes them."""
    choice = _allocator_option(argv)
    if choice == "none":
        return None
    return command_env(environ, mimalloc=choice == "mimalloc")


def _allocator_option(argv: list[str]) -> str:
    """``--allocator``'s value among ``run``'s own options (those before the script), ``auto`` without it."""
    for i, a in enumerate(argv[1:], 1):
        if not a.startswith("-"):
            break  # the script: what follows is its own
        if a.startswith("--allocator="):
            return a.split("=", 1)[1]
        if a == "--allocator" and i + 1 < len(argv):
            return argv[i + 1]
    return "auto"


def tune_command_process() -> None:
    """Re-execute this process once in :func:`command_env`'s environment (the ``cnnlstm`` console script's first
    step); return without doing anything when there is nothing to tune or it cannot re-execute."""
    argv = list(getattr(sys, "orig_argv", [])) or [sys.executable, *sys.argv]
    sub = sys.argv[1:]  # the command's own words: the subcommand first, however python was started
    env = launch_env(sub) if sub[:1] == ["run"] else command_env(argv=argv[1:])
    if env is None:
        return
    try:
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    except OSError:  # cannot re-execute: run as we are
        return


def raise_heap_threshold() -> None:
    """Map and free one block of ``RAISE_BYTES``, once per process and only in an untuned glibc process, as any
    program freeing such a buffer does: glibc's adaptive mmap threshold rises to the block's size (its ceiling is
    32 MiB) and its trim threshold to twice that, so blocks up to 31 MiB are served from, and freed back to, its
    heap. No setting is changed (``mallopt(3)``: "the threshold is adjusted upward to the size of the freed
    block")."""
    if _STATE["raised"] or not untuned():
        return
    import torch

    _STATE["raised"] = True
    block = torch.empty(RAISE_BYTES, dtype=torch.uint8)
    del block


PIN_BYTES = 30 << 20  # under the raised threshold, so glibc serves it from its heap
TOP_SLACK = 1 << 20  # a block ending this near the program break is at the top of glibc's heap
PIN_TRIES = 64  # free blocks of the pin's size lower in the heap, taken before the top is reached
HEADROOM = 3  # blocks of PIN_BYTES left free under the pin, for what backward needs beyond forward's peak


@functools.cache
def _sbrk():
    import ctypes

    try:
        sbrk = ctypes.CDLL(None).sbrk
    except (OSError, AttributeError):
        return None
    sbrk.argtypes, sbrk.restype = [ctypes.c_ssize_t], ctypes.c_void_p
    return sbrk


def _at_top(block, brk: int) -> bool:
    return 0 <= brk - (block.data_ptr() + block.nbytes) < TOP_SLACK


def top_pin(pin):
    """A block at the top of glibc's heap, above a training step's activations, for the caller to keep until its
    next step (``pin``: the one it kept, returned again while it is still at the top); None where there is none.

    glibc hands memory back to the kernel only from its heap's free top (once that reaches the trim threshold),
    and a training step frees its activations top down, so each step would fault most of them in again. With a
    block held above them, what the step frees stays in the heap for the next one, as the tuned process keeps
    it; ``HEADROOM`` blocks of its size are left free right under it, so what backward needs beyond forward's
    peak does not grow the heap past it. None of these blocks is written: they cost address space, not memory
    (until a step uses the room). Only in an untuned glibc process.

    Measured (the reference model, a user's chain in chunks, plain python): batch 8, 4,900-10,200 minor faults a
    step without the room, 0-385 with it; batch 32, 66,700 with 8 tries at the top, 14,800 with 64."""
    sbrk = _sbrk() if untuned() else None
    if sbrk is None or (pin is not None and _at_top(pin, sbrk(0))):
        return pin
    import torch

    raise_heap_threshold()  # else glibc maps a block of the pin's size instead
    del pin
    holes = []  # a free block of the size lower in the heap is taken first: hold those until the top is reached
    for _ in range(PIN_TRIES):
        block = torch.empty(PIN_BYTES, dtype=torch.uint8)
        if _at_top(block, sbrk(0)):
            # room under the pin for what backward needs beyond the forward's peak: blocks taken from the top
            # and let go again, so they stay a free hole below it instead of growing the heap past it
            room = [block] + [torch.empty(PIN_BYTES, dtype=torch.uint8) for _ in range(HEADROOM)]
            return room.pop()
        holes.append(block)
    return None
