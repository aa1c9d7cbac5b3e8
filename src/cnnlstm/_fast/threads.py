"""How many threads a training run uses: one for a small model, PyTorch's default (one per core) otherwise.

Splitting a training step over threads pays only when the step is big enough: each operator hands its slice to
the other threads and waits for all of them at a barrier, and a barrier waits for the slowest thread. When
another process takes one of the cores, a two-thread step waits for the thread that shares it. Measured side by
side by ``bench/threads.py`` (AMD EPYC, 2 cores; milliseconds a training step of the library's presets; busy:
another process keeps one core busy):

======================  ============  ========  =========  ========  =========
model (batch)           MFLOP a step  idle, 1   idle, 2    busy, 1   busy, 2
======================  ============  ========  =========  ========  =========
forecast, 24 steps (16) 7             2.1       2.6        2.6       8.7
series, 24 steps (8)    67            3.9       3.6        5.1       13.9
series, 150 steps (8)   416           12.6      10.9       16.6      37.1
video, 8 x 64 x 64 (8)  24,461        240       153        248       560
======================  ============  ========  =========  ========  =========

So a step under :data:`SMALL_STEP_FLOPS` trains on one thread: idle, at most a millisecond or two a step slower
(0.8 to 1.4 times the time of two), beside a busy process two to three times faster. A bigger model keeps one
thread per core, where it is up to 1.6 times faster idle (``--threads 1`` on a machine another job shares).
OpenMP's wait policy is no way out: ``OMP_WAIT_POLICY=PASSIVE`` or a shorter ``GOMP_SPINCOUNT`` cut the busy time
of two threads by up to half but cost the idle machine up to 7 times on small steps and 1.4 times on the video
step.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "SMALL_STEP_FLOPS",
    "cached_njit",
    "numba_cache_dir",
    "numba_owner",
    "numba_threads",
    "step_flops",
    "torch_threads",
    "training_threads",
]

SMALL_STEP_FLOPS = 100e6  # a training step (forward, backward) under this trains on one thread


def step_flops(model: nn.Module, x: torch.Tensor) -> float:
    """Floating-point operations of one training step of ``model`` on the batch ``x``: the forward pass in
    training mode counted by PyTorch's ``FlopCounterMode`` (convolutions and matrix products), times three for the
    backward pass.

    The model's buffers (BatchNorm's statistics) are put back as they were, and its mode too; no gradient is made.
    """
    from torch.utils.flop_counter import FlopCounterMode

    training = model.training
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    model.train()  # the training path (evaluation may take fused kernels the counter does not see)
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
    return 3.0 * counter.get_total_flops()


def training_threads(requested: int, model: nn.Module, example: torch.Tensor | None) -> int:
    """The threads to train ``model`` with: ``requested`` where it is above 0; else 1 where a step on the batch
    ``example`` (``(N, T, ...)``, the model's input) is under :data:`SMALL_STEP_FLOPS`, and PyTorch's current
    setting otherwise (or without an example)."""
    if requested > 0:
        return requested
    if example is None:
        return torch.get_num_threads()
    return 1 if step_flops(model, example) < SMALL_STEP_FLOPS else torch.get_num_threads()


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """PyTorch's intra-op threads set to ``n`` for the ``with`` block, and set back after it."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@functools.cache
def numba_owner() -> int:
    """The process that first readied cnnlstm's numba kernels (any of them). GNU OpenMP, numba's thread pool here,
    kills a child forked from it at the child's first parallel call ("fork() called from a process already using
    GNU OpenMP"), so kernels run only where ``os.getpid() == numba_owner()``: a forked child runs PyTorch's ops."""
    return os.getpid()


@contextlib.contextmanager
def numba_threads() -> Iterator[None]:
    """numba's kernels inside run on as many threads as PyTorch uses (``torch.set_num_threads``); the calling
    thread's own numba setting is restored after."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def numba_cache_dir() -> str:
    """Where cnnlstm's numba kernels are cached on disk: ``NUMBA_CACHE_DIR`` where the user set it, else
    ``$XDG_CACHE_HOME/cnnlstm/numba`` (``~/.cache/cnnlstm/numba``), never inside the installed package."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "cnnlstm" / "numba")


def cached_njit(**options) -> Callable:
    """``numba.njit(cache=True, **options)`` whose disk cache is :func:`numba_cache_dir` (numba reads its cache
    directory when a function is decorated; the setting is put back after, so a user's own numba code is left as
    it was)."""

    def decorate(f):
        import numba

        before = numba.config.CACHE_DIR
        numba.config.CACHE_DIR = numba_cache_dir()
        try:
            return numba.njit(cache=True, **options)(f)
        finally:
            numba.config.CACHE_DIR = before

    return decorate
