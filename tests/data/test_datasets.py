"""Data sets: the three layouts, broken files skipped and counted, clear errors before training,
paths outside the root refused, the collate function, clip transforms and the synthetic demo data."""

from __future__ import annotations

import json
import logging
import os
import re
import threading

import numpy as np
import pytest
import torch

from cnnlstm.data import datasets as ds_mod
from cnnlstm.data import probe, read_frames
from cnnlstm.data.batch import collate_clips
from cnnlstm.data.datasets import (
    BadSample,
    ClipSpec,
    VideoDataset,
    VideoItem,
    find_videos,
    stratified_split,
)
from cnnlstm.data.synthetic import CLASSES, make_moving_digits
from cnnlstm.data.transforms import ClipTransform
from cnnlstm.errors import ConfigError, DataError, VideoError

# frames come back as x / 255 with mean 0 and std 1, so the tests can read their frame codes
PLAIN = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def spec(**kw) -> ClipSpec:
    opts = {"clip_len": 4, "size": (24, 32), **PLAIN}
    opts.update(kw)
    return ClipSpec(**opts)


def ids_of(video: torch.Tensor, frame_ids) -> list[int]:
    """The frame codes of a ``(T, C, H, W)`` clip in ``[0, 1]``."""
    return frame_ids(video.permute(0, 2, 3, 1).numpy() * 255.0).tolist()  # (T, H, W, C)


@pytest.fixture
def class_root(tmp_path, make_video):
    """``data/CLASS/*.mp4``: zebra 3 videos, ant 2, mole 2 (written out of order), 12-30 frames each."""
    for name, n in [("zebra/z0.mp4", 12), ("zebra/z1.mp4", 20), ("zebra/z2.mp4", 16)]:
        make_video(f"data/{name}", n)
    for name, n in [("ant/a0.mp4", 30), ("ant/a1.mp4", 14), ("mole/m0.mp4", 18), ("mole/m1.mp4", 22)]:
        make_video(f"data/{name}", n)
    return tmp_path / "data"


# ----------------------------------------------------------------------------- layouts


def test_class_folders_give_sorted_classes_and_labels(class_root, frame_ids):
    ds = VideoDataset.from_root(class_root, spec=spec())
    assert ds.classes == ["ant", "mole", "zebra"]
    assert len(ds) == 7 and ds.skipped == []
    for item, label in zip(ds.items, ds.labels):
        assert item.label == label and ds.classes[label] == os.path.basename(os.path.dirname(item.path))
    assert sorted(ds.labels) == [0, 0, 1, 1, 2, 2, 2]
    i = next(k for k, it in enumerate(ds.items) if it.path.endswith("a0.mp4"))
    sample = ds[i]
    video = sample["video"]
    assert video.shape == (4, 3, 24, 32) and video.dtype == torch.float32
    assert (sample["label"], sample["length"], sample["index"]) == (0, 4, i)
    assert ids_of(video, frame_ids) == [3, 11, 18, 26]  # uniform over 30 frames
    assert ds.infos[i].frames == 30


def test_split_folders_read_the_asked_split_with_the_training_classes(tmp_path, make_video, frame_ids):
    for split, names in {"train": ["b/0.mp4", "b/1.mp4", "a/0.mp4"], "val": ["a/v.mp4", "b/v.mp4"]}.items():
        for name in names:
            make_video(f"data/{split}/{name}", 10)
    make_video("data/test/b/t.mp4", 10)  # test may lack a class
    root = tmp_path / "data"
    train = VideoDataset.from_root(root, spec=spec())  # no split: train
    assert train.classes == ["a", "b"] and sorted(train.labels) == [0, 1, 1]
    assert all("/train/" in it.path for it in train.items)
    val = VideoDataset.from_root(root, split="val", spec=spec())
    assert val.classes == ["a", "b"] and sorted(val.labels) == [0, 1]
    assert all("/val/" in it.path for it in val.items)
    test = VideoDataset.from_root(root, split="test", spec=spec())
    assert test.classes == ["a", "b"] and test.labels == [1]  # label index from train's classes
    assert ids_of(test[0]["video"], frame_ids) == [1, 3, 6, 8]


def test_a_class_in_test_but_not_in_train_is_an_error(tmp_path, make_video):
    make_video("data/train/cat/0.mp4", 5)
    make_video("data/test/cat/0.mp4", 5)
    make_video("data/test/cow/0.mp4", 5)
    with pytest.raises(
        DataError, match=r"has classes that the training split does not: cow \(the model only knows cat\)"
    ):
        find_videos(tmp_path / "data", split="test")


def test_a_missing_split_is_an_error(tmp_path, make_video):
    make_video("data/train/cat/0.mp4", 5)
    with pytest.raises(DataError, match=r"has split folders but no 'val' split"):
        find_videos(tmp_path / "data", split="val")


def _manifest(path, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")


def test_manifest_with_start_and_end_seconds(tmp_path, make_video, frame_ids):
    make_video("data/clips/long.mp4", 40, fps=10)  # 4 s
    make_video("data/clips/other.mp4", 12, fps=10)
    csv = tmp_path / "data" / "list.csv"
    _manifest(csv, ["path,label,start,end", "clips/long.mp4,walk,1.0,2.0", "clips/other.mp4,run,,"])
    ds = VideoDataset.from_root(csv, spec=spec())
    assert ds.classes == ["run", "walk"]
    long = next(k for k, it in enumerate(ds.items) if it.path.endswith("long.mp4"))
    assert (ds.items[long].start, ds.items[long].end, ds.items[long].label) == (1.0, 2.0, 1)
    (idx,) = ds.clip_indices(long)
    assert idx.min() >= 10 and idx.max() <= 19  # seconds 1..2 at 10 fps
    assert ids_of(ds[long]["video"], frame_ids) == idx.tolist() == [11, 13, 16, 18]
    other = 1 - long
    assert ds.items[other].start is None and ds.items[other].end is None
    assert ids_of(ds[other]["video"], frame_ids) == [1, 4, 7, 10]


def test_manifest_with_a_split_column(tmp_path, make_video):
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        make_video(f"data/{name}", 5)
    csv = tmp_path / "data" / "m.csv"
    _manifest(csv, ["path,label,split", "a.mp4,x,train", "b.mp4,y,train", "c.mp4,y,test"])
    items, classes, refused = find_videos(csv, split="test")
    assert classes == ["x", "y"] and refused == []
    assert [(os.path.basename(it.path), it.label) for it in items] == [("c.mp4", 1)]


def test_manifest_paths_outside_the_root_are_refused(tmp_path, make_video):
    make_video("data/in.mp4", 6)
    make_video("outside.mp4", 6)  # a real video, next to the data root
    os.symlink(tmp_path / "outside.mp4", tmp_path / "data" / "link.mp4")
    csv = tmp_path / "data" / "m.csv"
    _manifest(
        csv,
        [
            "path,label",
            "in.mp4,a",
            "../outside.mp4,a",
            f"{tmp_path / 'outside.mp4'},b",
            "link.mp4,b",
            "sub/../in.mp4,a",
        ],
    )
    ds = VideoDataset.from_root(csv, spec=spec(), warn=False)
    assert [os.path.basename(it.path) for it in ds.items] == ["in.mp4"]
    refused = dict(ds.skipped)
    assert set(refused) == {"../outside.mp4", str(tmp_path / "outside.mp4"), "link.mp4", "sub/../in.mp4"}
    assert all("outside the data root" in reason for reason in refused.values())
    assert "line 3 of m.csv" in refused["../outside.mp4"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["file,class", "a.mp4,x"], r"needs a header with at least path,label"),
        (["path,label,split", "a.mp4,x,train", "a.mp4,z,test"], r"labels z are not in its training rows"),
        (["path,label,start,end", "a.mp4,x,soon,later"], r"line 2: start/end must be seconds, got 'soon', 'later'"),
        (["path,label", "../a.mp4,x"], r"lists no usable video"),
    ],
)
def test_manifest_errors(tmp_path, make_video, rows, message):
    make_video("data/a.mp4", 5)
    csv = tmp_path / "data" / "m.csv"
    _manifest(csv, rows)
    with pytest.raises(DataError, match=message):
        find_videos(csv)


# ----------------------------------------------------------------------------- broken files


def test_every_broken_kind_is_skipped_named_and_counted(tmp_path, make_video, write_bad_files, bad_reasons, caplog):
    make_video("data/cat/good0.mp4", 10)
    make_video("data/cat/good1.mp4", 12)
    make_video("data/dog/good2.mp4", 14)
    bad = write_bad_files(tmp_path / "data" / "cat")
    with caplog.at_level(logging.WARNING, logger="cnnlstm.data"):
        ds = VideoDataset.from_root(tmp_path / "data", spec=spec())
    assert sorted(os.path.basename(it.path) for it in ds.items) == ["good0.mp4", "good1.mp4", "good2.mp4"]
    skipped = dict(ds.skipped)
    ours = [r for r in caplog.records if r.name == "cnnlstm.data" and r.levelno == logging.WARNING]
    assert len(ds.skipped) == len(bad) == 7
    for kind, path in bad.items():
        assert str(path) in skipped, kind
        assert re.search(bad_reasons[kind], skipped[str(path)]), (kind, skipped[str(path)])
        warnings = [r for r in ours if str(path) in r.getMessage()]
        assert len(warnings) == 1 and skipped[str(path)] in warnings[0].getMessage()
    assert len(ours) == 7  # one warning per file, no more
    assert all(isinstance(ds[i], dict) for i in range(len(ds)))


def test_a_text_file_in_a_class_folder_is_skipped(tmp_path, make_video):
    make_video("data/cat/good.mp4", 10)
    (tmp_path / "data" / "cat" / "notes.txt").write_text("labelled by hand on Tuesday\n" * 30)
    ds = VideoDataset.from_root(tmp_path / "data", spec=spec(), warn=False)
    assert [os.path.basename(it.path) for it in ds.items] == ["good.mp4"]
    assert [os.path.basename(p) for p, _ in ds.skipped] == ["notes.txt"]


def test_a_file_that_fails_at_load_is_a_bad_sample_that_collate_drops(tmp_path, make_video, truncated_faststart):
    make_video("data/cat/good.mp4", 10)
    make_video("data/dog/good.mp4", 10)
    cut = truncated_faststart(tmp_path / "data" / "cat" / "cut.mp4")
    ds = VideoDataset.from_root(tmp_path / "data", spec=spec())
    assert ds.skipped == [] and len(ds) == 3  # it passed the probe
    i = next(k for k, it in enumerate(ds.items) if it.path == str(cut))
    bad = ds[i]
    assert isinstance(bad, BadSample) and bad.path == str(cut)
    assert "corrupt or truncated" in bad.reason
    batch = collate_clips([ds[k] for k in range(3)])
    assert batch["video"].shape == (2, 4, 3, 24, 32)
    assert batch["skipped"] == [(str(cut), bad.reason)]
    assert sorted(batch["index"].tolist()) == sorted(set(range(3)) - {i})
    # through a DataLoader: no batch is lost to the bad file
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_clips)
    batches = list(loader)
    assert sum(len(b["label"]) for b in batches if b["label"] is not None) == 2
    assert [s for b in batches for s in b["skipped"]] == [(str(cut), bad.reason)]


def test_a_video_error_at_load_becomes_a_bad_sample(class_root, monkeypatch):
    ds = VideoDataset.from_root(class_root, spec=spec())
    victim = ds.items[2].path

    def flaky(path, *args, **kwargs):
        if path == victim:
            raise VideoError(f"{path}: truncated: ended at frame 3 of 12 before frame 9")
        return read_frames(path, *args, **kwargs)

    monkeypatch.setattr(ds_mod, "read_frames", flaky)
    assert ds[2] == BadSample(victim, f"{victim}: truncated: ended at frame 3 of 12 before frame 9")
    assert isinstance(ds[1], dict)
    batch = collate_clips([ds[2]])
    assert batch == {
        "video": None,
        "label": None,
        "lengths": None,
        "index": None,
        "windows": None,
        "skipped": [(victim, ds[2].reason)],
    }


def test_probing_runs_in_parallel(class_root, monkeypatch):
    barrier = threading.Barrier(2, timeout=10)  # two probes must be in flight at once, or it breaks

    def waiting_probe(path):
        barrier.wait()
        return probe(path)

    monkeypatch.setattr(ds_mod, "probe", waiting_probe)
    items, classes, _ = find_videos(class_root)
    ds = VideoDataset(items[:4], classes, spec=spec(), probe_workers=2)
    assert ds.skipped == [] and len(ds) == 4


# ----------------------------------------------------------------------------- clear errors before training


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match=r"data root '.*nowhere' does not exist \(give a folder of class folders"):
        VideoDataset.from_root(tmp_path / "nowhere")


def test_a_root_without_class_folders(tmp_path, make_video):
    make_video("data/loose.mp4", 5)
    with pytest.raises(DataError, match=r"has no class folders: lay the videos out as .*/CLASS/video\.mp4"):
        VideoDataset.from_root(tmp_path / "data")


def test_an_empty_class_folder(tmp_path, make_video):
    make_video("data/cat/0.mp4", 5)
    (tmp_path / "data" / "dog").mkdir()
    (tmp_path / "data" / "dog" / ".DS_Store").write_bytes(b"\0")  # hidden files do not count
    with pytest.raises(DataError, match=r"class folder .*dog has no files: add videos or remove the folder"):
        VideoDataset.from_root(tmp_path / "data")


def test_a_data_set_where_every_file_is_broken(tmp_path, write_bad_files):
    write_bad_files(tmp_path / "data" / "cat")["text"].unlink()  # a .txt decodes as "ansi" video (a bug)
    with pytest.raises(DataError, match=r"none of the 6 files could be read as video: .*cat/"):
        VideoDataset.from_root(tmp_path / "data", warn=False)


def test_a_symlink_out_of_the_root_is_refused(tmp_path, make_video):
    make_video("data/cat/0.mp4", 6)
    make_video("data/dog/0.mp4", 6)
    make_video("elsewhere/secret.mp4", 6)
    os.symlink(tmp_path / "elsewhere" / "secret.mp4", tmp_path / "data" / "cat" / "escape.mp4")
    os.symlink(tmp_path / "data" / "dog" / "0.mp4", tmp_path / "data" / "cat" / "alias.mp4")  # inside: fine
    ds = VideoDataset.from_root(tmp_path / "data", spec=spec(), warn=False)
    names = sorted(os.path.basename(it.path) for it in ds.items)
    assert names == ["0.mp4", "0.mp4", "alias.mp4"]
    assert [(os.path.basename(p), "outside the data root" in r) for p, r in ds.skipped] == [("escape.mp4", True)]


# ----------------------------------------------------------------------------- sampling through the data set


def test_pad_lengths_and_collate_pads_and_returns_lengths(tmp_path, make_video, frame_ids):
    make_video("data/a/short.mp4", 5)
    make_video("data/b/long.mp4", 20)
    ds = VideoDataset.from_root(tmp_path / "data", spec=spec(clip_len=8, pad="lengths"))
    short = next(k for k, it in enumerate(ds.items) if it.path.endswith("short.mp4"))
    assert ds[short]["length"] == 5 and ds[short]["video"].shape == (5, 3, 24, 32)
    batch = collate_clips([ds[0], ds[1]])
    assert batch["video"].shape == (2, 8, 3, 24, 32)
    assert batch["lengths"].tolist() == [5 if k == short else 8 for k in range(2)]
    assert batch["label"].tolist() == [0, 1] and batch["skipped"] == []
    assert torch.all(batch["video"][short, 5:] == 0)  # zero padding after the real frames
    assert ids_of(batch["video"][short, :5], frame_ids) == [0, 1, 2, 3, 4]
    repeat = VideoDataset.from_root(tmp_path / "data", spec=spec(clip_len=8, pad="repeat"))
    assert ids_of(repeat[short]["video"], frame_ids) == [0, 0, 1, 2, 2, 3, 4, 4]
    full = collate_clips([repeat[0], repeat[1]])
    assert full["lengths"] is None and full["video"].shape == (2, 8, 3, 24, 32)


def test_random_sampling_is_a_seeded_strided_clip(class_root, frame_ids):
    a = VideoDataset.from_root(class_root, spec=spec(sampling="random", stride=2), seed=3)
    b = VideoDataset.from_root(class_root, spec=spec(sampling="random", stride=2), seed=3)
    i = next(k for k, it in enumerate(a.items) if it.path.endswith("a0.mp4"))  # 30 frames
    got = ids_of(a[i]["video"], frame_ids)
    assert got == ids_of(b[i]["video"], frame_ids)
    assert np.diff(got).tolist() == [2, 2, 2] and got[0] >= 0 and got[-1] <= 29
    starts = {int(a.clip_indices(i)[0][0]) for _ in range(30)}
    assert len(starts) > 1  # it is random from call to call


def test_dense_sampling_gives_windows(class_root, frame_ids):
    ds = VideoDataset.from_root(class_root, spec=spec(sampling="dense"))
    i = next(k for k, it in enumerate(ds.items) if it.path.endswith("z0.mp4"))  # 12 frames
    sample = ds[i]
    assert sample["video"].shape == (3, 4, 3, 24, 32) and sample["length"] == 4  # (W, T, C, H, W)
    assert [ids_of(w, frame_ids) for w in sample["video"]] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_dense_sampling_with_one_window_keeps_the_window_axis(tmp_path, make_video):
    make_video("data/a/four.mp4", 4)
    ds = VideoDataset.from_root(tmp_path / "data", spec=spec(sampling="dense"))
    assert ds[0]["video"].shape == (1, 4, 3, 24, 32)


def test_collate_dense_clips_with_different_window_counts(tmp_path, make_video):
    make_video("data/a/short.mp4", 8)  # 2 windows
    make_video("data/b/long.mp4", 16)  # 4 windows
    ds = VideoDataset.from_root(tmp_path / "data", spec=spec(sampling="dense"))
    batch = collate_clips([ds[0], ds[1]])
    assert batch["video"].dim() == 6 and batch["video"].shape[0] == 2


def test_channels_and_size_reach_the_decoder(class_root):
    ds = VideoDataset.from_root(class_root, spec=spec(channels=1, size=(12, 16), mean=(0.5,), std=(0.25,)))
    video = ds[0]["video"]
    assert video.shape == (4, 1, 12, 16)
    assert video.min() >= (0 - 0.5) / 0.25 and video.max() <= (1 - 0.5) / 0.25


def test_subset_keeps_probes_and_can_change_the_spec(class_root):
    ds = VideoDataset.from_root(class_root, spec=spec())
    sub = ds.subset([2, 0], spec=spec(clip_len=2))
    assert [it.path for it in sub.items] == [ds.items[2].path, ds.items[0].path]
    assert sub.infos == [ds.infos[2], ds.infos[0]]
    assert sub[0]["video"].shape == (2, 3, 24, 32) and ds[2]["video"].shape == (4, 3, 24, 32)


def test_clip_spec_checks_and_round_trips_through_json():
    s = ClipSpec(clip_len=6, size=[32, 48], sampling="dense", stride=2, pad="lengths")
    d = json.loads(json.dumps(s.to_dict()))
    assert ClipSpec.from_dict(d) == s and s.size == (32, 48)
    with pytest.raises(ConfigError, match="unknown sampling 'middle': expected one of uniform, random, dense"):
        ClipSpec(sampling="middle")
    with pytest.raises(ConfigError, match="unknown pad policy 'zero': expected one of repeat, lengths"):
        ClipSpec(pad="zero")
    with pytest.raises(ConfigError, match="channels must be 1 or 3, got 4"):
        ClipSpec(channels=4)
    with pytest.raises(ConfigError, match=r"clip_len \(frames per clip\) must be at least 1, got 0"):
        ClipSpec(clip_len=0)
    with pytest.raises(ConfigError, match=r"both at least 1, got \(0, 5\)"):
        ClipSpec(size=(0, 5))


def test_stratified_split_keeps_every_class_in_both_splits():
    labels = [0] * 10 + [1] * 5 + [2] * 2 + [3]
    train, val = stratified_split(labels, val_fraction=0.2, seed=0)
    assert sorted(train + val) == list(range(len(labels))) and not set(train) & set(val)
    lab = np.asarray(labels)
    for c in (0, 1, 2):
        assert (lab[train] == c).any() and (lab[val] == c).any()
    assert (lab[val] == 0).sum() == 2 and (lab[val] == 1).sum() == 1
    assert 3 in lab[train] and 3 not in lab[val]  # a class of one stays in train
    assert stratified_split(labels, 0.2, seed=0) == (train, val)
    assert stratified_split(labels, 0.2, seed=1) != (train, val)
    assert stratified_split(labels, 0.0) == (list(range(len(labels))), [])


def test_collate_of_only_full_clips_and_of_only_bad_samples():
    clip = {"video": torch.ones(3, 1, 2, 2), "label": 1, "length": 3, "index": 7}
    batch = collate_clips([clip, BadSample("x.mp4", "broken"), clip])
    assert batch["video"].shape == (2, 3, 1, 2, 2) and batch["lengths"] is None
    assert batch["index"].tolist() == [7, 7] and batch["skipped"] == [("x.mp4", "broken")]
    empty = collate_clips([BadSample("y.mp4", "why")])
    assert empty["video"] is None and empty["skipped"] == [("y.mp4", "why")]


def test_a_dataset_of_items_reports_missing_files(tmp_path, make_video):
    good = make_video("v.mp4", 6).path
    items = [VideoItem(str(good), 0), VideoItem(str(tmp_path / "gone.mp4"), 0)]
    ds = VideoDataset(items, ["only"], spec=spec(), warn=False)
    assert len(ds) == 1 and ds.skipped == [(str(tmp_path / "gone.mp4"), "no such file")]


# ----------------------------------------------------------------------------- clip transforms


def _asymmetric_frame(h: int = 24, w: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x * y) % 256], axis=-1).astype(np.uint8)


def test_transform_layout_and_normalisation():
    frames = np.zeros((2, 4, 5, 3), np.uint8)
    frames[..., 0] = 255
    out = ClipTransform(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))(frames)
    assert out.shape == (2, 3, 4, 5) and out.dtype == torch.float32  # (T, C, H, W)
    assert torch.allclose(out[:, 0], torch.tensor(1.0))  # (1 - 0.5) / 0.5
    assert torch.allclose(out[:, 1], torch.tensor(-1.0))  # (0 - 0.25) / 0.25
    assert torch.allclose(out[:, 2], torch.tensor(0.0))
    default = ClipTransform()(np.full((1, 2, 2, 3), 255, np.uint8))
    assert torch.allclose(default, torch.tensor((1 - 0.45) / 0.225))
    gray = ClipTransform()(np.zeros((1, 2, 2, 1), np.uint8))  # 1 channel takes the first mean and std
    assert gray.shape == (1, 1, 2, 2) and torch.allclose(gray, torch.tensor(-2.0))


def test_transform_does_not_change_the_callers_frames():
    frames = np.stack([_asymmetric_frame()] * 2)
    before = frames.copy()
    ClipTransform(crop_scale=(0.3, 0.6), flip=True, seed=0)(frames)
    np.testing.assert_array_equal(frames, before)


@pytest.mark.parametrize("seed", range(6))
def test_crop_and_flip_are_the_same_for_every_frame(seed):
    clip = np.stack([_asymmetric_frame()] * 5)  # five identical frames
    out = ClipTransform(crop_scale=(0.3, 0.6), flip=True, seed=seed)(clip)
    assert out.shape == (5, 3, 24, 32)
    for t in range(1, 5):
        torch.testing.assert_close(out[t], out[0], rtol=0, atol=0)
    plain = ClipTransform()(clip)
    assert not torch.allclose(out[0], plain[0])  # a crop happened


def test_flip_flips_the_whole_clip_or_none_of_it():
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (4, 6, 8, 3), dtype=np.uint8)  # frames all different
    plain = ClipTransform()(clip)
    t = ClipTransform(flip=True, seed=0)
    seen = set()
    for _ in range(12):
        out = t(clip)
        if torch.equal(out, plain):
            seen.add("kept")
        elif torch.equal(out, plain.flip(-1)):
            seen.add("flipped")
        else:
            pytest.fail("some frames flipped and some not")
    assert seen == {"kept", "flipped"}


def test_transforms_with_the_same_seed_agree():
    clip = np.stack([_asymmetric_frame()] * 2)
    a = ClipTransform(crop_scale=(0.2, 0.5), flip=True, seed=5)
    b = ClipTransform(crop_scale=(0.2, 0.5), flip=True, seed=5)
    for _ in range(3):
        torch.testing.assert_close(a(clip), b(clip), rtol=0, atol=0)


# ----------------------------------------------------------------------------- the synthetic demo data


def _centroids(frames: np.ndarray) -> np.ndarray:
    """``(T, 2)`` (y, x) centroid of the bright digit in each ``(T, H, W, 3)`` frame."""
    gray = frames.astype(np.float64).mean(-1)
    out = []
    for g in gray:
        ys, xs = np.nonzero(g > 110)
        out.append((ys.mean(), xs.mean()))
    return np.asarray(out)


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    return make_moving_digits(root, train_per_class=1, test_per_class=1, sizes=((64, 64),), lengths=(10, 12))


def test_make_moving_digits_writes_readable_split_class_folders(digits_root):
    for split in ("train", "test"):
        items, classes, refused = find_videos(digits_root, split=split)
        assert classes == sorted(CLASSES) and refused == [] and len(items) == 8
        for it in items:
            info = probe(it.path)
            assert info.codec == "h264" and 10 <= info.frames <= 12 and (info.height, info.width) == (64, 64)


def _read(root, split: str, label: str) -> np.ndarray:
    path = next((root / split / label).glob("*.mp4"))
    return read_frames(path, range(probe(path).frames))


@pytest.mark.parametrize("split", ["train", "test"])
def test_moving_digits_move_as_their_class_says(digits_root, split):
    right = _centroids(_read(digits_root, split, "right-top"))
    left = _centroids(_read(digits_root, split, "left-top"))
    assert right[-1, 1] - right[0, 1] > 10 and (np.diff(right[:, 1]) > -2).all()  # x grows
    assert left[-1, 1] - left[0, 1] < -10
    assert right[:, 0].max() < 32 and left[:, 0].max() < 32  # both in the top half
    backwards = right[::-1]  # right-top played backwards moves like left-top
    assert np.sign(backwards[-1, 1] - backwards[0, 1]) == np.sign(left[-1, 1] - left[0, 1])
    down = _centroids(_read(digits_root, split, "down-left"))
    assert down[-1, 0] - down[0, 0] > 10 and down[:, 1].max() < 32  # y grows, in the left half


@pytest.mark.parametrize("seed", range(4))
def test_colour_jitter_is_one_change_for_the_whole_clip(seed):
    rng = np.random.default_rng(seed)
    frame = rng.integers(40, 200, (1, 6, 8, 3), dtype=np.uint8)
    clip = np.concatenate([frame, frame, frame])  # three identical frames
    plain = ClipTransform(mean=(0.0,) * 3, std=(1.0,) * 3)(clip)
    out = ClipTransform(color=0.3, mean=(0.0,) * 3, std=(1.0,) * 3, seed=seed)(clip)
    assert not torch.allclose(out, plain)  # the colours changed
    for t in (1, 2):
        torch.testing.assert_close(out[t], out[0], rtol=0, atol=0)  # the same way in every frame
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_colour_jitter_keeps_a_moving_edge_where_it_is():
    clip = np.zeros((2, 4, 8, 3), np.uint8)
    clip[0, :, :3], clip[1, :, :5] = 200, 200  # a bright bar grows to the right: that is the motion
    out = ClipTransform(color=0.4, mean=(0.0,) * 3, std=(1.0,) * 3, seed=1)(clip)
    diff = (out[1] - out[0]).abs().sum(dim=(0, 1))  # (W,)
    assert set(torch.nonzero(diff > 1e-6).flatten().tolist()) == {3, 4}
