"""Series data: the aeon sets shipped in the wheel, .npz/.npy arrays, long and wide CSV, variable lengths
kept (and reaching the model), malformed inputs refused with clear messages, the normaliser fitted on the
training split only, and ``cnnlstm train``/``evaluate`` on series end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import cnnlstm
from cnnlstm.cli import main
from cnnlstm.data.datasets import stratified_split
from cnnlstm.data.series import (
    Normalizer,
    SeriesDataset,
    SeriesSet,
    collate_series,
    is_series_source,
    load_series,
)
from cnnlstm.errors import DataError
from cnnlstm.run import Kind, RunFolder


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def savez(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def series_set(lengths, features=2, seed=0, labels=None) -> SeriesSet:
    rng = np.random.default_rng(seed)
    x = [rng.normal(size=(n, features)).astype(np.float32) for n in lengths]
    y = np.array(labels if labels is not None else [i % 2 for i in range(len(lengths))], dtype=np.int64)
    return SeriesSet(x, y, ["a", "b"])


# ----------------------------------------------------------------------------- aeon:NAME


def test_aeon_gunpoint_is_read_on_its_published_split():
    train, test = load_series("aeon:GunPoint", "train"), load_series("aeon:GunPoint", "test")
    assert (len(train.x), len(test.x)) == (50, 150)
    assert set(train.lengths.tolist()) == {150} and set(test.lengths.tolist()) == {150}
    assert train.features == test.features == 1
    assert train.classes == ["1", "2"] and test.classes == ["1", "2"]
    assert set(train.y.tolist()) == {0, 1} and train.y.dtype == np.int64
    assert train.x[0].dtype == np.float32 and train.name == "GunPoint"
    assert not np.array_equal(train.x[0], test.x[0])  # two different files, not one read twice


def test_aeon_basic_motions_has_six_channels():
    d = load_series("aeon:BasicMotions")
    assert len(d.x) == 40 and d.features == 6
    assert all(s.shape == (100, 6) for s in d.x)
    assert d.classes == sorted(d.classes) == ["badminton", "running", "standing", "walking"]
    assert np.bincount(d.y).tolist() == [10, 10, 10, 10]


def test_aeon_japanese_vowels_keeps_its_variable_lengths():
    import aeon
    from aeon.datasets import load_from_ts_file

    d = load_series("aeon:JapaneseVowels", "train")
    assert d.features == 12 and len(d.x) == 270
    assert (d.lengths.min(), d.lengths.max()) == (7, 26)
    assert len(set(d.lengths.tolist())) > 5  # kept variable, not padded or cut to one length
    # nothing truncated: every series is the whole series of the .ts file, as (T, F)
    raw, _ = load_from_ts_file(
        str(Path(aeon.__file__).parent / "datasets" / "data" / "JapaneseVowels" / "JapaneseVowels_TRAIN.ts")
    )
    assert d.lengths.tolist() == [s.shape[1] for s in raw]
    longest = int(np.argmax(d.lengths))
    np.testing.assert_allclose(d.x[longest], np.asarray(raw[longest]).T, rtol=1e-6)


def test_unknown_aeon_set_lists_the_shipped_ones():
    with pytest.raises(
        DataError, match=r"aeon:NoSuchSet is not shipped with aeon .*classification sets it ships: "
    ) as e:
        load_series("aeon:NoSuchSet")
    assert "BasicMotions" in str(e.value) and "GunPoint" in str(e.value) and "JapaneseVowels" in str(e.value)


# ----------------------------------------------------------------------------- arrays


def test_npz_with_x_and_y(tmp_path):
    x = np.arange(5 * 4 * 3, dtype=np.float64).reshape(5, 4, 3)
    d = load_series(savez(tmp_path / "toy.npz", x=x, y=np.array(["up", "down", "up", "left", "down"])))
    assert len(d.x) == 5 and d.features == 3 and d.lengths.tolist() == [4] * 5
    assert d.classes == ["down", "left", "up"] and d.y.tolist() == [2, 0, 2, 1, 0]
    assert d.name == "toy" and d.x[0].dtype == np.float32
    np.testing.assert_array_equal(d.x[3], x[3])


def test_npz_univariate_2d_is_one_feature(tmp_path):
    x = np.random.default_rng(0).normal(size=(4, 9))
    d = load_series(savez(tmp_path / "uni.npz", x=x, y=[0, 1, 0, 1]))
    assert d.features == 1 and all(s.shape == (9, 1) for s in d.x)
    np.testing.assert_allclose(d.x[2][:, 0], x[2], rtol=1e-6)


def test_npz_with_a_train_test_split(tmp_path):
    path = savez(
        tmp_path / "split.npz",
        x_train=np.zeros((4, 6, 2)),
        y_train=["a", "b", "a", "b"],
        x_test=np.ones((3, 6, 2)),
        y_test=["b", "b", "a"],
    )
    train = load_series(path, split="train")
    test = load_series(path, split="test", classes=train.classes)
    assert len(train.x) == 4 and len(test.x) == 3
    assert float(train.x[0].sum()) == 0.0 and float(test.x[0].sum()) == 12.0
    assert test.classes == ["a", "b"] and test.y.tolist() == [1, 1, 0]


def test_npz_lengths_cut_each_series_to_its_own_length(tmp_path):
    x = np.arange(3 * 5 * 2, dtype=np.float32).reshape(3, 5, 2)
    d = load_series(savez(tmp_path / "var.npz", x=x, y=[0, 1, 0], lengths=[5, 2, 3]))
    assert d.lengths.tolist() == [5, 2, 3]
    for s, full, n in zip(d.x, x, [5, 2, 3]):
        np.testing.assert_array_equal(s, full[:n])


def test_npz_split_lengths(tmp_path):
    path = savez(
        tmp_path / "var.npz",
        x_train=np.ones((2, 4, 1)),
        y_train=[0, 1],
        lengths_train=[4, 1],
        x_test=np.ones((2, 4, 1)),
        y_test=[1, 0],
        lengths_test=[2, 3],
    )
    assert load_series(path, "train").lengths.tolist() == [4, 1]
    assert load_series(path, "test").lengths.tolist() == [2, 3]


def test_npy_with_labels_beside_it(tmp_path):
    x = np.random.default_rng(1).normal(size=(3, 7, 2))
    np.save(tmp_path / "walks.npy", x)
    np.save(tmp_path / "walks_labels.npy", np.array(["slow", "fast", "slow"]))
    d = load_series(tmp_path / "walks.npy")
    assert d.features == 2 and d.lengths.tolist() == [7, 7, 7]
    assert d.classes == ["fast", "slow"] and d.y.tolist() == [1, 0, 1]
    np.testing.assert_allclose(d.x[1], x[1], rtol=1e-6)


def test_npy_without_labels_says_where_to_put_them(tmp_path):
    np.save(tmp_path / "walks.npy", np.zeros((3, 7, 2)))
    with pytest.raises(DataError, match=r"walks\.npy: put the labels in walks_labels\.npy beside it"):
        load_series(tmp_path / "walks.npy")


# ----------------------------------------------------------------------------- CSV


def test_long_csv_orders_rows_by_t_and_keeps_each_series_length(tmp_path):
    path = write(
        tmp_path / "long.csv",
        "id,label,t,f1,f2\n"
        "s1,walk,2,3,30\n"
        "s1,walk,0,1,10\n"
        "s2,run,1,8,80\n"
        "s1,walk,1,2,20\n"
        "s2,run,0,7,70\n"
        "s3,walk,0,5,50\n",
    )
    d = load_series(path)
    assert d.features == 2 and d.lengths.tolist() == [3, 2, 1]  # ids in order of first appearance
    np.testing.assert_array_equal(d.x[0], [[1, 10], [2, 20], [3, 30]])  # sorted by t, t not a feature
    np.testing.assert_array_equal(d.x[1], [[7, 70], [8, 80]])
    assert d.classes == ["run", "walk"] and d.y.tolist() == [1, 0, 1]


def test_long_csv_without_a_time_column_keeps_row_order(tmp_path):
    d = load_series(write(tmp_path / "long.csv", "id,label,f1\na,x,3\nb,y,9\na,x,1\na,x,2\n"))
    assert d.features == 1 and d.lengths.tolist() == [3, 1]
    assert d.x[0][:, 0].tolist() == [3, 1, 2]


def test_wide_csv_shorter_rows_are_shorter_series(tmp_path):
    header = "label," + ",".join(f"v{i}" for i in range(10))
    rows = ["a," + ",".join(str(i) for i in range(10)), "b,5,6,7,,,,,,,", "a,1,2,3,4,5,6,7,,,"]
    d = load_series(write(tmp_path / "wide.csv", "\n".join([header, *rows]) + "\n"))
    assert d.features == 1 and d.lengths.tolist() == [10, 3, 7]
    assert d.x[1][:, 0].tolist() == [5, 6, 7]
    assert d.x[0][:, 0].tolist() == list(range(10))
    assert d.classes == ["a", "b"] and d.y.tolist() == [0, 1, 0]


def test_a_wide_csv_row_cut_short_is_refused_with_its_line(tmp_path):
    text = "label,v0,v1,v2,v3\na,1,2,3,4\nb,5,6\n"  # line 3 has 3 cells, the header 5 columns
    with pytest.raises(DataError, match=r"line 3: 3 cell\(s\) where the header has 5 columns: a shorter series keeps"):
        load_series(write(tmp_path / "cut.csv", text))


def test_numeric_labels_sort_as_numbers(tmp_path):
    d = load_series(write(tmp_path / "wide.csv", "label,v0\n10,1\n9,2\n2,3\n"))
    assert d.classes == ["2", "9", "10"] and d.y.tolist() == [2, 1, 0]


# ----------------------------------------------------------------------------- malformed inputs


def test_csv_without_a_label_column(tmp_path):
    with pytest.raises(DataError, match=r"a series CSV needs a 'label' column \(long format: id,label,feature"):
        load_series(write(tmp_path / "bad.csv", "id,f1\n0,1\n0,2\n"))


@pytest.mark.parametrize(
    "text, where",
    [
        ("id,label,f1,f2\n0,a,1,2\n0,a,3,abc\n", r"line 3: column 'f2' holds 'abc', not a number"),
        ("label,v0,v1\na,1,2\nb,3,x4\n", r"line 3: column 'v1' holds 'x4', not a number"),
        ("id,label,t,f1\n0,a,0,1\n0,a,one,2\n", r"line 3: column 't' holds 'one', not a number"),
    ],
    ids=["long", "wide", "time"],
)
def test_csv_non_numeric_cell_names_line_and_column(tmp_path, text, where):
    with pytest.raises(DataError, match=where):
        load_series(write(tmp_path / "bad.csv", text))


def test_long_csv_id_that_changes_label(tmp_path):
    text = "id,label,f1\n0,a,1\n1,b,2\n0,b,3\n"
    with pytest.raises(DataError, match=r"line 4: series '0' changes label from 'a' to 'b'"):
        load_series(write(tmp_path / "bad.csv", text))


def test_long_csv_needs_feature_columns(tmp_path):
    with pytest.raises(DataError, match=r"no feature columns besides id/label"):
        load_series(write(tmp_path / "bad.csv", "id,label\n0,a\n"))


def test_csv_with_a_header_only_is_empty(tmp_path):
    with pytest.raises(DataError, match=r"empty CSV"):
        load_series(write(tmp_path / "bad.csv", "label,v0,v1\n"))


def test_gap_inside_a_series_is_a_nan_not_a_shorter_series(tmp_path):
    with pytest.raises(DataError, match=r"the series on line 3 has 1 NaN/inf value\(s\), the first at step 1 "):
        load_series(write(tmp_path / "bad.csv", "label,v0,v1,v2\na,1,2,3\nb,4,,6\n"))
    with pytest.raises(DataError, match=r"series id 'b' has 1 NaN/inf value\(s\), the first at step 1 \(from 0\)"):
        load_series(write(tmp_path / "long.csv", "id,label,f\na,x,1\nb,y,2\nb,y,\n"))


def test_four_dimensional_array(tmp_path):
    path = savez(tmp_path / "bad.npz", x=np.zeros((3, 4, 2, 2)), y=[0, 1, 0])
    with pytest.raises(DataError, match=r"series arrays are \(N, T, F\) or \(N, T\), got shape \(3, 4, 2, 2\)"):
        load_series(path)


def test_ragged_npz_is_a_clear_error(tmp_path):
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros(3), np.zeros(5)
    path = savez(tmp_path / "ragged.npz", x=ragged, y=[0, 1])
    with pytest.raises(DataError, match=r"ragged\.npz"):
        load_series(path)


def test_nan_names_the_series_and_the_step(tmp_path):
    x = np.zeros((3, 5, 2))
    x[2, 3, 1] = np.nan
    x[2, 4, 0] = np.inf
    with pytest.raises(
        DataError, match=r"series x\[2\] has 2 NaN/inf value\(s\), the first at step 3 \(from 0\), feature 1: fill or"
    ):
        load_series(savez(tmp_path / "nan.npz", x=x, y=[0, 1, 0]))


def test_nan_past_a_series_length_is_padding_not_an_error(tmp_path):
    x = np.ones((2, 4, 1))
    x[1, 2:] = np.nan  # beyond lengths[1] = 2: never read
    d = load_series(savez(tmp_path / "pad.npz", x=x, y=[0, 1], lengths=[4, 2]))
    assert d.lengths.tolist() == [4, 2] and np.isfinite(d.x[1]).all()


def test_mismatched_x_and_y(tmp_path):
    with pytest.raises(DataError, match=r"3 series but 2 labels"):
        load_series(savez(tmp_path / "bad.npz", x=np.zeros((3, 4)), y=[0, 1]))


def test_npz_without_x_and_y_names_what_it_has(tmp_path):
    path = savez(tmp_path / "bad.npz", data=np.zeros((3, 4)), target=[0, 1, 2])
    with pytest.raises(
        DataError, match=r"an \.npz needs arrays x and y \(or x_train, y_train\); it has \['data', 'target'\]"
    ):
        load_series(path)


@pytest.mark.parametrize("lengths", [[4, 0], [4, 5], [4]], ids=["zero", "too-long", "wrong-count"])
def test_bad_lengths(tmp_path, lengths):
    path = savez(tmp_path / "bad.npz", x=np.ones((2, 4, 1)), y=[0, 1], lengths=lengths)
    with pytest.raises(DataError, match=r"lengths must be \(N,\) = \(2,\) with values in 1\.\.4"):
        load_series(path)


def test_empty_series(tmp_path):
    with pytest.raises(DataError, match=r"series x\[0\] is empty"):
        load_series(savez(tmp_path / "bad.npz", x=np.zeros((2, 0, 1)), y=[0, 1]))


def test_test_labels_outside_the_training_classes(tmp_path):
    path = savez(
        tmp_path / "s.npz", x_train=np.zeros((2, 3)), y_train=["a", "b"], x_test=np.zeros((2, 3)), y_test=["a", "z"]
    )
    train = load_series(path, "train")
    with pytest.raises(DataError, match=r"labels \['z'\] are not among the training split's classes \['a', 'b'\]"):
        load_series(path, "test", classes=train.classes)


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(DataError, match=r"no such file \(series come from aeon:NAME, \.npz, \.npy or \.csv\)"):
        load_series(tmp_path / "nope.npz")
    with pytest.raises(DataError, match=r"series are read from \.npz, \.npy or \.csv, not \.txt"):
        load_series(write(tmp_path / "x.txt", "1,2,3\n"))


@pytest.mark.parametrize("first", [True, False], ids=["first-row", "later-row"])
def test_wide_csv_row_longer_than_the_header(tmp_path, first):
    rows = ["a,1,2,3", "b,4,5"] if first else ["a,1,2", "b,4,5,6"]
    with pytest.raises(DataError, match=r"line [23]"):
        load_series(write(tmp_path / "bad.csv", "label,v0,v1\n" + "\n".join(rows) + "\n"))


# ----------------------------------------------------------------------------- is_series_source


def test_is_series_source(tmp_path):
    manifest = write(tmp_path / "videos.csv", "path,label\na.mp4,zebra\n")
    long_csv = write(tmp_path / "long.csv", "id,label,f1\n0,a,1\n")
    wide_csv = write(tmp_path / "wide.csv", "label,v0\na,1\n")
    assert is_series_source("aeon:BasicMotions")
    assert is_series_source("x.npz") and is_series_source(tmp_path / "x.npy")  # by name, existing or not
    assert is_series_source(long_csv) and is_series_source(str(wide_csv))
    assert not is_series_source(manifest)
    assert not is_series_source(tmp_path)  # a folder of videos
    assert not is_series_source(tmp_path / "missing.csv")
    assert not is_series_source(tmp_path / "clip.mp4")


# ----------------------------------------------------------------------------- normaliser


def test_normalizer_is_fitted_on_the_train_steps_only():
    train = [np.array([[0.0, 5.0], [2.0, 5.0]], np.float32), np.array([[4.0, 5.0]], np.float32)]
    norm = Normalizer.fit(train)
    # pooled over all 3 steps (a mean of per-series means would give 2.5 for channel 0)
    np.testing.assert_allclose(norm.mean, [2.0, 5.0], rtol=1e-6)
    np.testing.assert_allclose(norm.std[0], np.std([0.0, 2.0, 4.0]), rtol=1e-6)
    assert norm.std[1] == 1.0  # a constant channel is not divided by zero
    test = np.array([[10.0, 7.0], [2.0, 5.0]], np.float32)
    out = norm(test)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(out, [[(10 - 2) / np.std([0, 2, 4]), 2.0], [0.0, 0.0]], rtol=1e-5)
    # the test series' own statistics play no part
    assert not np.allclose(out, Normalizer.fit([test])(test))


def test_dataset_uses_the_given_normalizer_and_fits_its_own_otherwise():
    train, test = series_set([6, 4]), series_set([5, 3], seed=1)
    test.x = [s * 3 + 10 for s in test.x]
    norm = Normalizer.fit(train.x)
    item = SeriesDataset(test, norm)[0]
    assert item["length"] == 5 and item["label"] == 0 and item["index"] == 0
    np.testing.assert_allclose(item["series"].numpy(), norm(test.x[0]), rtol=1e-6)
    assert float(item["series"].mean()) > 3  # train statistics: the shifted test set stays shifted
    own = SeriesDataset(test)
    pooled = torch.cat([own[i]["series"] for i in range(len(own))])
    torch.testing.assert_close(pooled.mean(0), torch.zeros(2), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- batches and the model


def test_collate_pads_to_the_longest_and_passes_lengths():
    ds = SeriesDataset(series_set([3, 5, 2], labels=[1, 0, 1]))
    b = collate_series([ds[0], ds[1], ds[2]])
    assert b["series"].shape == (3, 5, 2)
    assert b["lengths"].tolist() == [3, 5, 2]
    assert b["label"].tolist() == [1, 0, 1] and b["index"].tolist() == [0, 1, 2]
    assert b["series"][0, 3:].abs().sum() == 0 and b["series"][2, 2:].abs().sum() == 0
    torch.testing.assert_close(b["series"][2, :2], ds[2]["series"])
    torch.testing.assert_close(b["series"][1], ds[1]["series"])


def test_collate_equal_lengths_gives_no_lengths():
    ds = SeriesDataset(series_set([4, 4]))
    b = collate_series([ds[0], ds[1]])
    assert b["series"].shape == (2, 4, 2) and b["lengths"] is None


@pytest.mark.parametrize(
    "backbone_options",
    [{"causal": True, "kernel_size": 3, "channels": (8, 8)}, {"kernel_size": 1, "channels": (8, 8)}],
    ids=["causal", "kernel-1"],
)
def test_padded_batch_with_lengths_matches_each_series_alone(backbone_options):
    # The conv1d backbone runs over the whole padded batch; only the RNN and the head get the lengths. A
    # centred kernel looks ahead: at the last valid steps of a short series, its second layer reads the
    # first layer's outputs at padded steps (BatchNorm shift + ReLU: not zero), where the series alone reads
    # zero edge padding, so the two legitimately differ. A causal kernel only looks back and a kernel of 1
    # only at its own step: valid steps cannot see the padding and the logits must match.
    torch.manual_seed(0)
    model = cnnlstm.CNNLSTM(
        layout="NTF",
        input_shape=(None, 3),
        backbone="conv1d",
        backbone_options=backbone_options,
        bridge="none",
        head="last",
        hidden_size=8,
        num_classes=4,
    ).eval()
    ds = SeriesDataset(series_set([7, 3, 5, 1], features=3))
    b = collate_series([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        batched = model(b["series"], b["lengths"])
        alone = torch.cat([model(ds[i]["series"][None]) for i in range(len(ds))])
        ignored = model(b["series"])  # without lengths the padded steps are read as data
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ignored[1:], alone[1:], atol=1e-4)  # so the check above could fail


# ----------------------------------------------------------------------------- the command line


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


TINY = ("--epochs", "2", "--batch-size", "8", "--hidden-size", "16", "--backbone-channels", "4,8,4")


@pytest.fixture(scope="module")
def basic_motions_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("series") / "bm"
    result = invoke("train", "aeon:BasicMotions", "--out", str(out), *TINY)
    assert result.exit_code == 0, result.output
    return out, result.output


def split_npz(path: Path, seed: int = 0) -> Path:
    """A 3-class, 2-feature set with variable lengths: class k is a sine of frequency k + 1."""
    rng = np.random.default_rng(seed)

    def part(n: int):
        y = np.arange(n) % 3
        lengths = rng.integers(12, 25, size=n)
        t = np.arange(24)[None, :, None]
        x = np.sin((y[:, None, None] + 1) * t / 4.0) + 0.1 * rng.normal(size=(n, 24, 2))
        x = x + np.array([3.0, -1.0])  # offsets for the normaliser to remove
        return x.astype(np.float32), np.array(["a", "b", "c"])[y], lengths

    xtr, ytr, ltr = part(24)
    xte, yte, lte = part(9)
    np.savez(path, x_train=xtr, y_train=ytr, lengths_train=ltr, x_test=xte, y_test=yte, lengths_test=lte)
    return path


@pytest.mark.slow
def test_train_on_a_shipped_set_writes_a_series_run(basic_motions_run):
    out, output = basic_motions_run
    for name in ("config.json", "model.safetensors", "labels.json", "data.json", "run.json"):
        assert (out / name).is_file(), name
    assert "40 train / 0 val series" in output
    assert json.loads((out / "labels.json").read_text()) == ["badminton", "running", "standing", "walking"]
    data = RunFolder(out).data_spec()
    assert json.loads((out / "data.json").read_text())["format"] == 2
    assert data.kind == Kind.SERIES_CLASSIFY and data.input.source == "aeon:BasicMotions" and data.input.features == 6
    assert len(data.input.mean) == len(data.input.std) == 6
    norm = Normalizer.fit(load_series("aeon:BasicMotions", "train").x)  # the train split, not the test one
    np.testing.assert_allclose(data.input.mean, norm.mean, rtol=1e-5)
    np.testing.assert_allclose(data.input.std, norm.std, rtol=1e-5)
    run = json.loads((out / "run.json").read_text())
    assert run["train_series"] == 40 and run["val_series"] == 0 and run["epochs"] == 2
    assert run["best_val_acc"] is None
    model = run["model"]
    assert model["backbone"] == "fcn" and model["arrangement"] == "parallel" and model["hidden_size"] == 16
    assert tuple(model["backbone_options"]["channels"]) == (4, 8, 4)


@pytest.mark.slow
def test_evaluate_and_load_a_series_run(basic_motions_run):
    out, _ = basic_motions_run
    result = invoke("evaluate", str(out), "aeon:BasicMotions", "--json")
    assert result.exit_code == 0, result.output
    ev = json.loads(result.output)
    assert ev["videos"] == 40 and 0.0 <= ev["accuracy"] <= 1.0
    assert sum(r["support"] for r in ev["per_class"]) == 40 and [r["support"] for r in ev["per_class"]] == [10] * 4
    assert "test split of aeon:BasicMotions" in ev["subset"]
    assert Path(ev["confusion_png"]).is_file()
    model = cnnlstm.CNNLSTM.from_pretrained(out).eval()
    x = torch.from_numpy(Normalizer.fit(load_series("aeon:BasicMotions").x)(load_series("aeon:BasicMotions").x[0]))
    with torch.no_grad():
        assert model(x[None]).shape == (1, 4)


@pytest.mark.slow
def test_train_and_evaluate_an_npz_with_a_validation_part(tmp_path):
    path = split_npz(tmp_path / "my_series.npz")
    out = tmp_path / "runs" / "npz"
    result = invoke("train", str(path), "--out", str(out), *TINY, "--val-fraction", "0.25")
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["val_series"] == 6 and run["train_series"] == 18  # a stratified quarter of 24
    assert run["best_val_acc"] is not None and 0.0 <= run["best_val_acc"] <= 1.0
    assert json.loads((out / "labels.json").read_text()) == ["a", "b", "c"]
    # the normaliser saw the 18 training series only, never the validation ones
    train = load_series(path, "train")
    tr, _ = stratified_split(train.y.tolist(), 0.25, 0)
    data = RunFolder(out).data_spec().input
    np.testing.assert_allclose(data.mean, Normalizer.fit([train.x[i] for i in tr]).mean, rtol=1e-5)
    assert not np.allclose(data.mean, Normalizer.fit(train.x).mean, rtol=1e-6, atol=0)
    assert data.features == 2 and len(data.std) == 2

    ev = invoke("evaluate", str(out), str(path), "--json")
    assert ev.exit_code == 0, ev.output
    result = json.loads(ev.output)
    assert result["videos"] == 9 and 0.0 <= result["accuracy"] <= 1.0
    assert cnnlstm.CNNLSTM.from_pretrained(out).config.input_shape[-1] == 2


@pytest.mark.slow
def test_npz_without_val_fraction_trains_on_the_whole_split(tmp_path):
    path = split_npz(tmp_path / "my_series.npz")
    out = tmp_path / "run"
    result = invoke(
        "train", str(path), "--out", str(out), "--epochs", "1", "--hidden-size", "8", "--backbone-channels", "4,4,4"
    )
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert (run["train_series"], run["val_series"]) == (24, 0)


@pytest.mark.parametrize(
    "source, code, message",
    [
        ("missing.npz", 1, "no such file (series come from aeon:NAME, .npz, .npy or .csv)"),
        ("aeon:NoSuchSet", 1, "aeon:NoSuchSet is not shipped with aeon"),
        (
            "missing.txt",
            1,
            "does not exist (videos: a folder or a CSV manifest; series: aeon:NAME, .npz, .npy or .csv)",
        ),
    ],
    ids=["missing-npz", "unknown-aeon", "bad-extension"],
)
def test_train_on_a_wrong_source_is_a_clear_error(tmp_path, monkeypatch, source, code, message):
    monkeypatch.chdir(tmp_path)
    result = invoke("train", source, "--out", str(tmp_path / "run"), "--epochs", "1")
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())  # click may wrap long messages
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_train_on_an_existing_file_of_unknown_kind_is_a_clear_error(tmp_path):
    data = write(tmp_path / "data.txt", "1,2,3\n")
    result = invoke("train", str(data), "--out", str(tmp_path / "run"), "--epochs", "1")
    assert result.exit_code != 0
    assert "does not exist" not in result.output
    assert ".npz" in result.output and ".csv" in result.output


def test_train_on_a_malformed_series_file_is_a_clear_error(tmp_path):
    path = savez(tmp_path / "bad.npz", x=np.zeros((3, 4, 2, 2)), y=[0, 1, 0])
    result = invoke("train", str(path), "--out", str(tmp_path / "run"), "--epochs", "1")
    assert result.exit_code == 1, result.output
    assert "series arrays are (N, T, F) or (N, T), got shape (3, 4, 2, 2)" in result.output


@pytest.mark.slow
def test_evaluate_a_series_run_on_a_missing_file(basic_motions_run, tmp_path):
    out, _ = basic_motions_run
    result = invoke("evaluate", str(out), str(tmp_path / "gone.npz"))
    assert result.exit_code == 1, result.output
    assert "no such file" in result.output


def test_save_sequence_round_trips_values_and_anomaly_labels(tmp_path):
    from cnnlstm.data.sequences import labelled_sequence
    from cnnlstm.data.series import load_sequence, save_sequence

    rng = np.random.default_rng(0)
    v = rng.normal(size=(50, 3)).astype(np.float32)
    y = (np.arange(50) % 7 == 0).astype(int)
    path = save_sequence(tmp_path / "s.csv", v, y)
    back, names = load_sequence(path)
    assert names == ["x0", "x1", "x2", "is_anomaly"]
    np.testing.assert_allclose(back[:, :3], v, rtol=1e-6)
    values, labels = labelled_sequence(str(path), "test")
    assert values.shape == (50, 3) and labels.tolist() == y.tolist()
    one, names = load_sequence(save_sequence(tmp_path / "one.csv", v[:, 0]))
    assert names == ["value"] and one.shape == (50, 1)
    with pytest.raises(DataError, match="3 labels for 50 steps"):
        save_sequence(tmp_path / "bad.csv", v, y[:3])
