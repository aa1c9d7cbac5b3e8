"""The fast path against the plain module over 200 random per-frame modules (tests/_fast/differential.py), in child
processes: a crash fails the test that ran it (naming the module), not the test run. The children run under glibc's
heap checks (``MALLOC_CHECK_=3`` with its debugging library preloaded, ``MALLOC_PERTURB_``) and numba's bounds checks
(``NUMBA_BOUNDSCHECK=1``, with a cache of their own, so that no kernel compiled without them is loaded); one half
runs without numba's kernels (the path of an install without the ``fast`` extra)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
MALLOC_DEBUG = Path("/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0")


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MALLOC_CHECK_="3", MALLOC_PERTURB_="165", NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "numba"),
        CNNLSTM_FAST="1", PYTHONFAULTHANDLER="1", OMP_NUM_THREADS="1",
    )  # fmt: skip
    if MALLOC_DEBUG.exists():  # glibc 2.34 and later read MALLOC_CHECK_ only with it preloaded
        env["LD_PRELOAD"] = f"{MALLOC_DEBUG}:{env['LD_PRELOAD']}" if env.get("LD_PRELOAD") else str(MALLOC_DEBUG)
    return env


def _run(seeds: str, env: dict[str, str], numba: bool) -> None:
    cmd = [sys.executable, str(HERE / "differential.py"), "--seeds", seeds, *([] if numba else ["--no-numba"])]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    bad = [d for d in lines if "mismatch" in d or "error" in d]
    if bad:
        d = bad[0]
        pytest.fail(f"seed {d['seed']}: {d.get('mismatch') or d.get('error')}\n{d.get('tb', '')}{d['module']}")
    started = [d["start"] for d in lines if "start" in d]
    if proc.returncode != 0 or not any("done" in d for d in lines):
        last = started[-1] if started else None
        pytest.fail(f"the child died (exit {proc.returncode}) in seed {last}:\n{proc.stderr[-3000:]}")
    assert len([d for d in lines if "ok" in d]) == len(started)


@pytest.mark.parametrize(("seeds", "numba"), [("0:100", True), ("100:200", False)])
def test_fast_path_equals_the_plain_module(seeds, numba, tmp_path):
    _run(seeds, _env(tmp_path), numba)
