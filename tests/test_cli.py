"""The `cnnlstm` command, through click's runner and as a real subprocess."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from cnnlstm.cli import main


def test_doctor_builtin_model_is_ok():
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "ok: output (8, 10)" in result.output
    assert "backbone.module.block1.conv" in result.output  # the explain table came first


def test_doctor_options_reach_the_model():
    result = CliRunner().invoke(
        main, ["doctor", "--bridge", "flatten", "--input", "2,?,3,64,64", "--num-classes", "7", "--bidirectional"]
    )
    assert result.exit_code == 0, result.output
    assert "ok: output (2, 7)" in result.output
    assert "Flatten" in result.output


def test_doctor_bad_option_is_a_clear_error():
    result = CliRunner().invoke(main, ["doctor", "--bridge", "nope"])
    assert result.exit_code != 0
    assert "unknown bridge 'nope'" in result.output and "gap" in result.output


def test_doctor_on_a_user_file_prescribes_the_fix(tmp_path):
    src = tmp_path / "net.py"
    src.write_text(
        textwrap.dedent(
            """
            from torch import nn

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.cnn = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(16))
                    self.lstm = nn.LSTM(512, 128, batch_first=True)

                def forward(self, x):
                    n, t = x.shape[:2]
                    maps = self.cnn(x.flatten(0, 1)).unflatten(0, (n, t))
                    return self.lstm(maps)[0][:, -1]

            def build():
                return Net()
            """
        )
    )
    result = CliRunner().invoke(main, ["doctor", f"{src}:build", "--input", "8,16,3,112,112"])
    assert result.exit_code == 1
    assert "LSTM 'lstm'" in result.output
    assert 'bridge="gap" gives F=64' in result.output and 'bridge="flatten" gives F=3136' in result.output


def test_doctor_user_file_needs_a_factory_name(tmp_path):
    src = tmp_path / "net.py"
    src.write_text("def build():\n    pass\n")
    result = CliRunner().invoke(main, ["doctor", str(src)])
    assert result.exit_code != 0
    assert "build" in result.output


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "cnnlstm.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "cnnlstm" in out.stdout


def _clean_env(**extra: str) -> dict[str, str]:
    drop = ("MALLOC_", "MIMALLOC_", "CNNLSTM_NO_", "CNNLSTM_MALLOC", "LD_PRELOAD")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(drop)}, **extra}


def _after_fast_malloc(env: dict[str, str]) -> dict:
    """Run ``_fast_malloc`` in a fresh interpreter; what the process it continues as sees."""
    code = (
        "import json, os; from cnnlstm.cli import _fast_malloc; _fast_malloc(); "
        "maps = open('/proc/self/maps').read() if os.path.exists('/proc/self/maps') else ''; "
        "print(json.dumps({'env': dict(os.environ), 'mimalloc_mapped': 'libmimalloc' in maps}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the allocator is tuned on Linux only")
def test_the_command_reexecutes_once_with_a_faster_allocator():
    from cnnlstm._alloc import GLIBC_THRESHOLDS, mimalloc_library

    got = _after_fast_malloc(_clean_env())
    lib = mimalloc_library()
    if lib is not None:  # cnnlstm[fast]: mimalloc is really loaded in the process that runs the command
        assert got["env"]["CNNLSTM_MALLOC"] == "mimalloc" and got["mimalloc_mapped"]
        assert got["env"]["LD_PRELOAD"].split(":")[0] == lib and got["env"]["MIMALLOC_PURGE_DELAY"] == "-1"
    else:
        assert got["env"]["CNNLSTM_MALLOC"] == "glibc" and not got["mimalloc_mapped"]
        assert all(got["env"][k] == v for k, v in GLIBC_THRESHOLDS.items())
    off = _after_fast_malloc(_clean_env(CNNLSTM_NO_MALLOC_TUNING="1"))
    assert "CNNLSTM_MALLOC" not in off["env"] and not off["mimalloc_mapped"]
    own = _after_fast_malloc(_clean_env(MALLOC_MMAP_THRESHOLD_="12345"))  # the user's own tuning stands
    assert "CNNLSTM_MALLOC" not in own["env"] and own["env"]["MALLOC_MMAP_THRESHOLD_"] == "12345"


def test_fast_malloc_env_picks_mimalloc_when_installed_else_glibc(monkeypatch):
    from cnnlstm import _alloc

    monkeypatch.setattr(_alloc.sys, "platform", "linux")
    monkeypatch.setattr(_alloc, "mimalloc_library", lambda: "/x/libmimalloc.so")
    env = _alloc.fast_malloc_env({"PATH": "/bin", "LD_PRELOAD": "/y/libfoo.so", "MIMALLOC_PURGE_DELAY": "100"})
    assert env["LD_PRELOAD"] == "/x/libmimalloc.so:/y/libfoo.so" and env["PATH"] == "/bin"
    assert env["MIMALLOC_PURGE_DELAY"] == "100" and env["CNNLSTM_MALLOC"] == "mimalloc"  # the user's value stands
    assert _alloc.fast_malloc_env(env) is None  # once only: the re-executed process does not loop
    assert _alloc.fast_malloc_env({"LD_PRELOAD": "/z/libjemalloc.so"}) is None  # the user's own allocator
    monkeypatch.setattr(_alloc, "mimalloc_library", lambda: None)
    env = _alloc.fast_malloc_env({"PATH": "/bin"})
    assert env["CNNLSTM_MALLOC"] == "glibc" and "LD_PRELOAD" not in env
    assert env["MALLOC_TRIM_THRESHOLD_"] == str(1 << 34)
    monkeypatch.setattr(_alloc.sys, "platform", "darwin")
    assert _alloc.fast_malloc_env({"PATH": "/bin"}) is None


def _thp_after(code: str, **extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "CNNLSTM_NO_MALLOC_TUNING")}
    code += "; import os; print(os.environ.get('THP_MEM_ALLOC_ENABLE'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, **extra}, check=True)
    return out.stdout.strip()


def test_importing_cnnlstm_first_asks_pytorch_for_huge_pages():
    from cnnlstm._alloc import huge_pages_available

    assert _thp_after("import cnnlstm") == ("1" if huge_pages_available() else "None")
    assert _thp_after("import torch, cnnlstm") == "None"  # too late: PyTorch has read it already
    assert _thp_after("import cnnlstm", CNNLSTM_NO_MALLOC_TUNING="1") == "None"
    assert _thp_after("import cnnlstm", THP_MEM_ALLOC_ENABLE="0") == "0"  # the user's own setting stands


def test_huge_pages_follow_the_kernel_setting(tmp_path, monkeypatch):
    from cnnlstm import _alloc

    sysfs = tmp_path / "enabled"
    monkeypatch.setattr(_alloc, "THP_SYSFS", sysfs)
    sysfs.write_text("always madvise [never]\n")
    assert not _alloc.huge_pages_available()
    sysfs.write_text("always [madvise] never\n")
    assert _alloc.huge_pages_available() == sys.platform.startswith("linux")
    sysfs.unlink()
    assert not _alloc.huge_pages_available()


@pytest.mark.parametrize(("folder", "found"), [("lib", True), ("my env", False), ("a:b", False)])
def test_mimalloc_library_is_only_a_path_ld_preload_can_take(tmp_path, monkeypatch, folder, found):
    import importlib.metadata

    from cnnlstm import _alloc

    lib = tmp_path / folder / "libmimalloc.so"
    lib.parent.mkdir()
    lib.write_bytes(b"")

    class Entry:
        name = "libmimalloc.so"

        def locate(self):
            return lib

    monkeypatch.setattr(importlib.metadata, "files", lambda dist: [Entry()])
    assert _alloc.mimalloc_library() == (str(lib) if found else None)
