"""Every script in examples/ runs as a newcomer would run it."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))
# examples that read the user's files (an export folder, a video): run here without them, with them in the named test
NEEDS_FILES = {"05_onnxruntime_only.py": "tests/test_export_bundle.py"}


def test_the_articles_three_cases_come_first():
    # the README points newcomers at these by name: a renamed or lost example must fail here
    assert [p.name for p in EXAMPLES[:4]] == [
        "01_image_positions_lstm.py", "02_gap_lstm.py", "03_time_distributed_sequences.py", "04_keras_layout.py",
    ]  # fmt: skip


@pytest.mark.parametrize("script", [p for p in EXAMPLES if p.name not in NEEDS_FILES], ids=lambda p: p.name)
def test_example_runs(script):
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()


@pytest.mark.parametrize("script", [p for p in EXAMPLES if p.name in NEEDS_FILES], ids=lambda p: p.name)
def test_example_without_its_files_says_what_it_wants(script):
    assert (Path(__file__).parents[1] / NEEDS_FILES[script.name]).is_file()
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "usage:" in out.stderr and "the following arguments are required" in out.stderr
