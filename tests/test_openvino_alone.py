"""The OpenVINO test modules, run in a pytest process of their own (see ``OPENVINO_MODULES`` in conftest.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

MODULES = [
    "test_export_int8.py",
    "test_export_openvino.py",
    "test_export_ov_stream.py",
    "test_export_runtime.py",
    "test_export_runtime_stream.py",
]


def test_the_openvino_modules_pass_in_a_process_of_their_own():
    pytest.importorskip("openvino")
    here = Path(__file__).parent
    env = {**os.environ, "CNNLSTM_OPENVINO_ALONE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(str(here / m) for m in MODULES)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=here.parent, timeout=1800)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1]
