"""``cnnlstm run``: a user's own script in the process the command trains in, run as python would run it."""

import json
import os
import subprocess
import sys

import pytest

_TUNING = ("MALLOC_", "MIMALLOC_", "CNNLSTM_", "LD_PRELOAD", "THP_MEM_ALLOC_ENABLE")
SCRIPT = """
import json, os, sys
print(json.dumps({"argv": sys.argv, "name": __name__, "allocator": os.environ.get("CNNLSTM_MALLOC"),
                  "threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"), "path0": sys.path[0]}))
sys.exit(3)
"""


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_TUNING)}
    return subprocess.run(
        [sys.executable, "-m", "cnnlstm.cli", "run", *args], capture_output=True, text=True, env=env, cwd=cwd
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the process is tuned on Linux only")
def test_run_starts_the_script_with_its_arguments_in_a_tuned_process(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = _run(str(script), "--epochs", "3", "--allocator", "x")
    assert out.returncode == 3, out.stderr  # the script's own exit status
    got = json.loads(out.stdout)
    assert got["argv"] == [str(script), "--epochs", "3", "--allocator", "x"]  # its options are its own
    assert got["name"] == "__main__" and got["path0"] == str(tmp_path)
    assert got["allocator"] == "glibc" and int(got["threshold"]) >= 1 << 31
    plain = json.loads(_run("--allocator", "none", str(script)).stdout)
    assert plain["allocator"] is None and plain["threshold"] is None


def test_run_takes_a_module_with_m(tmp_path):
    (tmp_path / "mytrain.py").write_text(SCRIPT)
    out = _run("-m", "mytrain", "a", cwd=tmp_path)
    assert out.returncode == 3, out.stderr
    got = json.loads(out.stdout)
    assert got["argv"][1:] == ["a"] and got["name"] == "__main__"


def test_run_names_a_missing_script(tmp_path):
    out = _run(str(tmp_path / "nope.py"))
    assert out.returncode == 2 and "no such script" in out.stderr and "nope.py" in out.stderr
