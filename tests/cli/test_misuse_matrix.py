"""The first hour's misuses, run through the command line: each ends in one line that names what was wrong,
a non-zero exit, and no traceback."""

import shutil

import pytest
from click.testing import CliRunner

from cnnlstm.cli import main


def _folders(tmp_path, tiny_videos, tiny_run):
    run, _ = tiny_run
    empty = tmp_path / "empty"
    empty.mkdir()
    one_class = tmp_path / "one"
    shutil.copytree(tiny_videos / "train" / sorted(p.name for p in (tiny_videos / "train").iterdir())[0],
                    one_class / "only")  # fmt: skip
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video\n")
    damaged = tmp_path / "damaged-run"
    shutil.copytree(run, damaged)
    (damaged / "model.safetensors").unlink()
    return {"empty": empty, "one": one_class, "txt": notes, "run": run, "damaged": damaged, "videos": tiny_videos}


CASES = [
    (["train", "{empty}", "--out", "{tmp}/r1"], "empty"),
    (["train", "{one}", "--out", "{tmp}/r2"], "one class"),
    (["train", "{txt}", "--out", "{tmp}/r3"], "notes.txt"),
    (["train", "{tmp}/nowhere", "--out", "{tmp}/r4"], "does not exist"),
    (["evaluate", "{empty}", "{videos}"], "empty"),
    (["evaluate", "{damaged}", "{videos}"], "model.safetensors"),
    (["predict", "{run}", "{tmp}/missing.mp4"], "missing.mp4"),
    (["predict", "{run}", "{txt}"], "notes.txt"),
    (["export", "{damaged}"], "model.safetensors"),
    (["stream", "{run}", "{txt}"], "notes.txt"),
]


@pytest.mark.parametrize("args, names", CASES, ids=[" ".join(a[:2]) for a, _ in CASES])
def test_a_misuse_is_one_line_that_names_it(args, names, tmp_path, tiny_videos, tiny_run):
    where = {k: str(v) for k, v in _folders(tmp_path, tiny_videos, tiny_run).items()} | {"tmp": str(tmp_path)}
    result = CliRunner().invoke(main, [a.format(**where) for a in args])
    text = result.output.strip()
    assert result.exit_code != 0, text
    assert "Traceback" not in text and (result.exception is None or isinstance(result.exception, SystemExit)), text
    last = text.splitlines()[-1]
    # an error, or (predict and stream go on past a bad file among several) the file named as skipped
    assert last.startswith("Error: ") or ": skipped: " in last, text
    assert names.lower() in last.lower(), text
