"""The process the ``cnnlstm`` command runs in: importing cnnlstm changes nothing; the console script re-executes
itself once with a faster allocator and huge pages."""

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

from cnnlstm._fast import alloc

_TUNING = ("MALLOC_", "MIMALLOC_", "CNNLSTM_NO_", "CNNLSTM_MALLOC", "LD_PRELOAD", "THP_MEM_ALLOC_ENABLE")


def _clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith(_TUNING)}, **extra}


def test_importing_cnnlstm_leaves_the_environment_as_it_was():
    code = "import json, os; before = dict(os.environ); import cnnlstm; print(json.dumps([before, dict(os.environ)]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_clean_env(), check=True)
    before, after = json.loads(out.stdout)
    assert after == before


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the process is tuned on Linux only")
def test_the_command_reexecutes_once_with_a_faster_allocator_and_huge_pages():
    code = (
        "import json, os; from cnnlstm._fast.alloc import tune_command_process; tune_command_process(); "
        "maps = open('/proc/self/maps').read(); "
        "print(json.dumps({'env': dict(os.environ), 'mimalloc_mapped': 'libmimalloc' in maps}))"
    )

    def after(env: dict[str, str]) -> dict:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    got = after(_clean_env())
    if alloc.mimalloc_library() is not None:  # cnnlstm[fast]: mimalloc is really loaded in the re-executed process
        assert got["env"]["CNNLSTM_MALLOC"] == "mimalloc" and got["mimalloc_mapped"]
    else:
        assert got["env"]["CNNLSTM_MALLOC"] == "glibc" and not got["mimalloc_mapped"]
    assert got["env"].get("THP_MEM_ALLOC_ENABLE") == ("1" if alloc.huge_pages_available() else None)
    own = after(_clean_env(MALLOC_MMAP_THRESHOLD_="12345"))  # the user's own tuning stands: no re-execution
    assert "CNNLSTM_MALLOC" not in own["env"] and own["env"]["MALLOC_MMAP_THRESHOLD_"] == "12345"
    assert "THP_MEM_ALLOC_ENABLE" not in own["env"]


def test_fast_malloc_env_picks_mimalloc_when_installed_else_glibc(monkeypatch):
    monkeypatch.setattr(alloc.sys, "platform", "linux")
    monkeypatch.setattr(alloc, "mimalloc_library", lambda: "/x/libmimalloc.so")
    env = alloc.fast_malloc_env({"PATH": "/bin", "LD_PRELOAD": "/y/libfoo.so", "MIMALLOC_PURGE_DELAY": "100"})
    assert env["LD_PRELOAD"] == "/x/libmimalloc.so:/y/libfoo.so" and env["PATH"] == "/bin"
    assert env["MIMALLOC_PURGE_DELAY"] == "100" and env["CNNLSTM_MALLOC"] == "mimalloc"  # the user's value stands
    assert alloc.fast_malloc_env(env) is None  # once only: the re-executed process does not loop
    assert alloc.fast_malloc_env({"LD_PRELOAD": "/z/libjemalloc.so"}) is None  # the user's own allocator
    assert alloc.fast_malloc_env({"CNNLSTM_NO_MALLOC_TUNING": "1"}) is None
    monkeypatch.setattr(alloc, "mimalloc_library", lambda: None)
    env = alloc.fast_malloc_env({"PATH": "/bin"})
    assert env["CNNLSTM_MALLOC"] == "glibc" and "LD_PRELOAD" not in env
    assert env["MALLOC_TRIM_THRESHOLD_"] == str(1 << 34)
    monkeypatch.setattr(alloc.sys, "platform", "darwin")
    assert alloc.fast_malloc_env({"PATH": "/bin"}) is None


def test_a_command_naming_openvino_gets_glibc_not_mimalloc(monkeypatch):
    """OpenVINO's CPU plugin aborts ("free(): invalid pointer") in a process with mimalloc preloaded."""
    monkeypatch.setattr(alloc.sys, "platform", "linux")
    monkeypatch.setattr(alloc, "mimalloc_library", lambda: "/x/libmimalloc.so")
    argvs = [["export", "run", "--runtime", "openvino"], ["export", "run", "--runtime=openvino"]]
    argvs += [[cmd, "run", "x.mp4", "--runtime", "openvino", "--precision", "int8"] for cmd in ("predict", "stream")]
    argvs += [["evaluate", "run", "data", "--export", "dir", "--runtime=openvino"]]
    for argv in argvs:
        env = alloc.command_env({"PATH": "/bin"}, argv)
        assert env["CNNLSTM_MALLOC"] == "glibc" and "LD_PRELOAD" not in env, argv
    env = alloc.command_env({"PATH": "/bin"}, ["export", "run", "--runtime", "onnxruntime"])
    assert env["CNNLSTM_MALLOC"] == "mimalloc" and env["LD_PRELOAD"] == "/x/libmimalloc.so"


@pytest.mark.parametrize("thp", [True, False])
def test_the_command_env_carries_huge_pages_where_the_kernel_offers_them(monkeypatch, thp):
    monkeypatch.setattr(alloc.sys, "platform", "linux")
    monkeypatch.setattr(alloc, "mimalloc_library", lambda: None)
    monkeypatch.setattr(alloc, "huge_pages_available", lambda: thp)
    assert alloc.command_env({"PATH": "/bin"}).get("THP_MEM_ALLOC_ENABLE") == ("1" if thp else None)
    assert alloc.command_env({"THP_MEM_ALLOC_ENABLE": "0"})["THP_MEM_ALLOC_ENABLE"] == "0"  # the user's own stands
    assert alloc.command_env({"CNNLSTM_NO_MALLOC_TUNING": "1"}) is None


def test_huge_pages_follow_the_kernel_setting(tmp_path, monkeypatch):
    sysfs = tmp_path / "enabled"
    monkeypatch.setattr(alloc, "THP_SYSFS", sysfs)
    sysfs.write_text("always madvise [never]\n")
    assert not alloc.huge_pages_available()
    sysfs.write_text("always [madvise] never\n")
    assert alloc.huge_pages_available() == sys.platform.startswith("linux")
    sysfs.unlink()
    assert not alloc.huge_pages_available()


@pytest.mark.parametrize(("folder", "found"), [("lib", True), ("my env", False), ("a:b", False)])
def test_mimalloc_library_is_only_a_path_ld_preload_can_take(tmp_path, monkeypatch, folder, found):
    lib = tmp_path / folder / "libmimalloc.so"
    lib.parent.mkdir()
    lib.write_bytes(b"")

    class Entry:
        name = "libmimalloc.so"

        def locate(self):
            return lib

    monkeypatch.setattr(importlib.metadata, "files", lambda dist: [Entry()])
    assert alloc.mimalloc_library() == (str(lib) if found else None)


_FAULTS = """
import json, resource, sys, torch, cnnlstm
tuned = cnnlstm.tune_malloc() if sys.argv[1] == "tune" else None
def faults():
    for _ in range(3):  # 128 MiB, written and freed: glibc maps and unmaps it each time unless tuned
        torch.empty(32 << 20).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        torch.empty(32 << 20).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"tuned": tuned, "faults": faults()}))
"""


def _faults(*args: str, **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS, *args], capture_output=True, text=True, env=_clean_env(**env), check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tune_malloc_keeps_freed_memory_for_the_next_allocation():
    plain, tuned = _faults("plain"), _faults("tune")
    assert tuned["tuned"] is True
    assert plain["faults"] > 3 * 20000  # 3 x 128 MiB faulted in again, 4 KiB (or 2 MiB) pages at a time
    assert tuned["faults"] < plain["faults"] / 20
    # the user's own settings stand: nothing changed, and it says so
    assert _faults("tune", MALLOC_MMAP_THRESHOLD_="65536")["tuned"] is False
    assert _faults("tune", CNNLSTM_NO_MALLOC_TUNING="1")["tuned"] is False


@pytest.mark.parametrize(
    ("argv", "allocator"),
    [
        (["run", "train.py", "--allocator", "mimalloc"], "auto"),  # the script's own option, not run's
        (["run", "--allocator", "none", "train.py"], "none"),
        (["run", "--allocator=mimalloc", "-m", "pkg.train"], "mimalloc"),
        (["run", "-m", "pkg.train"], "auto"),
    ],
)
def test_run_reads_only_its_own_allocator_option(argv, allocator):
    assert alloc._allocator_option(argv) == allocator


def test_launch_env_raises_glibc_thresholds_unless_mimalloc_is_asked_for(monkeypatch):
    monkeypatch.setattr(alloc.sys, "platform", "linux")
    monkeypatch.setattr(alloc, "mimalloc_library", lambda: "/x/libmimalloc.so")
    auto = alloc.launch_env(["run", "train.py"], {"PATH": "/bin"})
    assert auto["CNNLSTM_MALLOC"] == "glibc" and "LD_PRELOAD" not in auto
    assert alloc.launch_env(["run", "--allocator", "mimalloc", "t.py"], {})["LD_PRELOAD"] == "/x/libmimalloc.so"
    assert alloc.launch_env(["run", "--allocator", "none", "t.py"], {}) is None


_HINT = """
import json, warnings, torch, cnnlstm
tuned = cnnlstm.tune_malloc() if __import__("sys").argv[1] == "tune" else None
class Opaque(torch.nn.Module):  # a forward that checks a shape, which tracing cannot follow: run as written
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    def forward(self, x):
        if x.shape[1] != 3:
            raise ValueError("3 channels")
        return self.body(x)
def model(cnn):
    return cnnlstm.CNNLSTM(input_shape=(None, 3, 64, 64), num_classes=2, hidden_size=4, backbone=cnn)
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    chain = model(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()))
    chain(torch.zeros(2, 128, 3, 64, 64)).sum().backward()  # a chain: trained in chunks, nothing to say
    opaque = model(Opaque())
    opaque(torch.zeros(1, 2, 3, 64, 64)).sum().backward()  # small: its activations stay under the thresholds
    quiet = len(seen)
    for _ in range(2):
        opaque(torch.zeros(2, 128, 3, 64, 64)).sum().backward()  # 12 MiB of frames a call
print(json.dumps({"quiet": quiet, "hints": [str(w.message) for w in seen], "tuned": tuned}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_training_big_batches_untuned_says_once_how_to_tune():
    def hints(*args: str, **env: str) -> dict:
        out = subprocess.run(
            [sys.executable, "-c", _HINT, *args], capture_output=True, text=True, env=_clean_env(**env), check=True
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    plain = hints("plain")
    assert plain["quiet"] == 0 and len(plain["hints"]) == 1  # once per process, only for a batch that pays
    assert "cnnlstm.tune_malloc()" in plain["hints"][0] and "cnnlstm run" in plain["hints"][0]
    tuned = hints("tune")
    assert tuned["tuned"] is True and tuned["hints"] == []
    assert hints("plain", CNNLSTM_NO_MALLOC_TUNING="1")["hints"] == []
