"""Evaluate and predict with a trained run, through the library."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cnnlstm.apps.evaluate import evaluate
from cnnlstm.apps.predict import predict, prediction_lines
from cnnlstm.errors import DataError


def test_evaluate_measures_the_test_split_and_writes_the_confusion_matrix(tiny_run, tiny_videos):
    out, _ = tiny_run
    result = evaluate(out, tiny_videos)
    cm = np.array(result.confusion)
    assert result.videos == 8 and cm.shape == (8, 8) and cm.sum() == 8 and result.subset == "test"
    assert result.accuracy == pytest.approx(np.trace(cm) / cm.sum())  # accuracy is the confusion's diagonal
    recalls = [r["recall"] for r in result.per_class]
    assert recalls == pytest.approx([cm[i, i] / max(1, cm[i].sum()) for i in range(8)])
    assert Path(result.confusion_png).read_bytes()[:4] == b"\x89PNG"
    lines = result.lines()
    assert lines[0].startswith(f"accuracy {result.accuracy:.4f}   macro-F1") and "right-top" in "\n".join(lines)
    assert json.loads(json.dumps(result.to_dict()))["videos"] == 8


def test_the_per_class_table_lines_up_for_short_names():
    from cnnlstm.apps.evaluate import EvalResult

    row = {"precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 2}
    r = EvalResult(0.5, 0.5, [{"class": "a", **row}, {"class": "bb", **row}], [[1, 0], [1, 0]], 2, "test", "c.png")
    header, *rows = r.lines()[1:4]
    ends = [line.index("1.000") + len("1.000") for line in rows]  # numbers are right-aligned under their header
    assert ends == [header.index("precision") + len("precision")] * 2


def test_evaluate_without_split_folders_uses_the_held_out_videos(tiny_videos, fit_tiny, tmp_path, monkeypatch):
    import cnnlstm.apps.evaluate as ev

    data = tmp_path / "flat"
    shutil.copytree(Path(tiny_videos) / "train", data)  # class folders only: training holds some out
    out = tmp_path / "r"
    summary = fit_tiny(data, out)
    titles = []
    plot = ev.plot_confusion
    monkeypatch.setattr(ev, "plot_confusion", lambda *a, title: titles.append(title) or plot(*a, title=title))
    held = evaluate(out, data)
    before = (out / "confusion.png").read_bytes()
    every = evaluate(out, data, all_videos=True)
    assert held.videos == summary.val_items == len(summary.held_out)
    assert held.subset.startswith("held-out") and every.videos == 24 and every.subset == "all"
    # --all writes its own file, says what it holds, and leaves the held-out matrix alone
    assert held.confusion_png == str(out / "confusion.png") and every.confusion_png == str(out / "confusion-all.png")
    assert (out / "confusion.png").read_bytes() == before and (out / "confusion-all.png").is_file()
    assert "\n" not in titles[0] and titles[1].endswith("\nall 24 videos, training ones included")


def test_evaluate_all_on_videos_the_run_never_trained_on_claims_no_training_videos(
    tiny_run, tiny_videos, tmp_path, monkeypatch
):
    import cnnlstm.apps.evaluate as ev

    out, _ = tiny_run
    titles = []
    plot = ev.plot_confusion
    monkeypatch.setattr(ev, "plot_confusion", lambda *a, title: titles.append(title) or plot(*a, title=title))
    every = evaluate(out, Path(tiny_videos) / "test", all_videos=True, out=tmp_path)  # the test split, flat
    assert every.confusion_png == str(tmp_path / "confusion-all.png") and not (tmp_path / "confusion.png").exists()
    assert titles == [f"test: accuracy {every.accuracy:.3f}\nall 8 videos"]


def test_evaluate_refuses_classes_the_model_never_saw(tiny_run, tiny_videos, tmp_path):
    out, _ = tiny_run
    data = tmp_path / "other"
    shutil.copytree(Path(tiny_videos) / "test" / "up-left", data / "sideways")
    with pytest.raises(DataError, match="classes the model was not trained on: sideways"):
        evaluate(out, data)


def test_predict_top_k_and_a_bad_file(tiny_run, tiny_videos, tmp_path):
    out, _ = tiny_run
    video = next((Path(tiny_videos) / "test" / "up-left").glob("*.mp4"))
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    rows = predict(out, [video, bad], topk=8)
    probs = [t["prob"] for t in rows[0]["top"]]
    assert len(probs) == 8 and probs == sorted(probs, reverse=True)
    assert sum(probs) == pytest.approx(1.0, abs=1e-3)  # all classes: the softmax sums to one
    assert rows[1]["path"] == str(bad) and "error" in rows[1]
    lines = prediction_lines(rows)
    assert lines[1].startswith(f"{bad}: skipped: ") and lines[0].startswith(f"{video}: ")


def test_predict_in_bf16_agrees_with_float32(tiny_run, tiny_videos):
    out, _ = tiny_run
    video = next((Path(tiny_videos) / "test" / "up-left").glob("*.mp4"))
    rows = {
        p: {t["label"]: t["prob"] for t in predict(out, [video], topk=8, precision=p)[0]["top"]} for p in ("32", "bf16")
    }
    assert rows["32"].keys() == rows["bf16"].keys()
    assert max(abs(rows["32"][k] - rows["bf16"][k]) for k in rows["32"]) < 0.02
    assert rows["32"] != rows["bf16"]  # bf16 really ran: its rounding shows in the probabilities
