"""What a person sees: plots sized by their content, titles that fit, the loss named for its task, one colour per
class, legends for every mark."""

import csv
from itertools import pairwise

import numpy as np
import pytest

from cnnlstm.apps import plots
from cnnlstm.apps.plots import class_colors, confusion_figure, curves_figure, scores_figure, timeline_figure
from cnnlstm.errors import ConfigError


def _metrics(path, acc: bool):
    cols = ["epoch", "step", "train_loss_step", "train_loss_epoch", "val_loss"] + (["val_acc"] if acc else [])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for e in range(3):
            w.writerow({"epoch": e, "step": e, "train_loss_epoch": 1 / (e + 1), "val_loss": 1.1 / (e + 1)} | (
                {"val_acc": 0.5 + e / 10} if acc else {}
            ))  # fmt: skip
    return path


def _confusion(k: int, name: str = "c", top: int = 9) -> np.ndarray:
    rng = np.random.default_rng(k)
    return rng.integers(0, 3, (k, k)) + np.diag(np.full(k, top)), [f"{name}{i}" for i in range(k)]


@pytest.mark.parametrize(
    ("task", "acc", "loss"),
    [("classify", True, "cross-entropy"), ("forecast", False, "mean squared error"),
     ("anomaly", False, "mean squared error of the next-step prediction")],
)  # fmt: skip
def test_the_loss_is_named_for_the_task_and_no_panel_is_empty(tmp_path, task, acc, loss):
    fig = curves_figure(_metrics(tmp_path / "m.csv", acc), task)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ([loss, "accuracy"] if acc else [loss])  # forecast and anomaly: no accuracy panel
    assert [len(ax.lines) for ax in fig.axes] == ([2, 1] if acc else [2])  # train, val; val accuracy only


def test_an_unknown_task_lists_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown task 'regress': expected one of classify, forecast, anomaly"):
        curves_figure(_metrics(tmp_path / "m.csv", False), "regress")


def test_write_curves_names_the_loss_from_the_run_kind(tmp_path, monkeypatch):
    from cnnlstm.run import Kind, RunFolder

    folder = RunFolder(tmp_path / "r")
    (folder.logs / "version_0").mkdir(parents=True)
    _metrics(folder.logs / "version_0" / "metrics.csv", acc=False)
    seen = []
    monkeypatch.setattr(plots, "plot_curves", lambda m, p, task: seen.append(task) or p)
    folder.write_curves(Kind.SERIES_FORECAST)
    folder.write_curves(Kind.VIDEO_ANOMALY)
    assert seen == ["forecast", "anomaly"]
    monkeypatch.undo()
    curves, best = folder.write_curves(Kind.SERIES_FORECAST)
    assert curves.read_bytes()[:4] == b"\x89PNG" and best is None  # no accuracy logged


def test_the_confusion_matrix_grows_with_the_classes_and_their_names():
    sizes = [tuple(confusion_figure(*_confusion(k)).get_size_inches()) for k in (2, 8, 20, 60)]
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in pairwise(sizes))
    short = confusion_figure(*_confusion(8, "c")).get_size_inches()
    long = confusion_figure(*_confusion(8, "a-rather-long-class-name-")).get_size_inches()
    assert long[0] > short[0] and long[1] > short[1]  # room for the names on both axes
    assert sizes[-1][0] < 25  # 60 classes: small cells, not a poster


def test_the_confusion_title_wraps_to_fit_even_at_two_classes(tmp_path):
    title = "/data/videos/a-rather-long-dataset-folder-name: accuracy 0.967\nall 24 videos, training ones included"
    fig = confusion_figure(*_confusion(2), title=title)
    text = fig.axes[0].title
    width = text.get_window_extent(fig.canvas.get_renderer()).width
    assert width <= fig.bbox.width and text.get_text().count("\n") >= 2  # wrapped, the second line kept
    assert "".join(text.get_text().split()) == "".join(title.split())  # nothing dropped
    from PIL import Image

    with Image.open(plots.plot_confusion(*_confusion(2), tmp_path / "c.png", title=title)) as im:
        assert im.width >= 300 and im.height >= 250  # no longer a 220x180 thumbnail


def test_confusion_counts_where_they_fit_and_colour_by_the_share_of_the_true_class():
    m, names = _confusion(3)
    m[2] *= 10  # a common class: its colours must stay comparable with the rare ones
    fig = confusion_figure(m, names)
    ax = fig.axes[0]
    assert sorted(int(t.get_text()) for t in ax.texts) == sorted(m.ravel().tolist())
    np.testing.assert_allclose(ax.images[0].get_array(), m / m.sum(axis=1, keepdims=True))
    assert ax.images[0].get_clim() == (0.0, 1.0)
    big, names = _confusion(60, top=12345)  # five digits in cells a quarter inch wide: no counts
    assert len(confusion_figure(big, names).axes[0].texts) == 0


def test_a_class_keeps_its_colour_across_timelines():
    classes = [f"class{i}" for i in range(12)]
    rng = np.random.default_rng(0)
    a = timeline_figure(range(20), rng.dirichlet(np.ones(12), 20), classes)
    probs = rng.dirichlet(np.ones(12), 20)
    probs[:, 11] += 2  # another class on top: the legend's order changes, the colours do not
    b = timeline_figure(range(20), probs / probs.sum(1, keepdims=True), classes)
    colors = [{line.get_label(): line.get_color() for line in fig.axes[0].lines} for fig in (a, b)]
    shared = colors[0].keys() & colors[1].keys()
    assert len(shared) >= 8 and all(colors[0][c] == colors[1][c] for c in shared)
    assert all(colors[0][c] == class_colors(12)[classes.index(c)] for c in colors[0])
    assert b.axes[0].get_legend().get_texts()[0].get_text() == "class11"  # the highest peak first


@pytest.mark.parametrize("n", [2, 10, 20, 60])
def test_class_colours_are_distinct_and_fixed_by_index(n):
    assert len(set(class_colors(n))) == n
    if n <= 20:  # tab10, then tab20's light shades: a class's colour does not depend on how many there are
        assert class_colors(n)[:2] == class_colors(2)


def test_the_anomaly_timeline_names_the_true_region_and_the_threshold():
    truth = np.zeros(100, bool)
    truth[30:40] = truth[70:75] = True  # two regions: both shaded, one legend entry
    fig = scores_figure([np.zeros(100)], ["ecg.csv"], 2.5, series=np.sin(np.arange(100)), truth=truth)
    top, bottom = fig.axes
    assert [t.get_text() for t in top.get_legend().get_texts()] == ["series", "true anomaly"]
    assert [t.get_text() for t in bottom.get_legend().get_texts()] == ["score", "threshold 2.50", "true anomaly"]
    assert len(bottom.patches) == 2


def test_the_clip_timeline_names_its_colours():
    fig = scores_figure([np.zeros(5), np.ones(5)], ["a.mp4", "b.mp4"], 1.5, labels=[0, 1], start=2)
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["anomalous clip", "normal clip", "threshold 1.50"]
    assert fig.axes[0].lines[0].get_xdata()[0] == 2
