"""The export folder as an edge user gets it: labels, preprocessing and export.json beside the graphs, and a video
classified from them with onnxruntime, PyAV and numpy alone (examples/05_onnxruntime_only.py)."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import cnnlstm as cl
from cnnlstm.build import preset
from cnnlstm.cli import main
from cnnlstm.data.datasets import VideoDataset, VideoItem
from cnnlstm.export import export_run
from cnnlstm.run import DataSpec, ForecastSpec, Kind, RunFolder, SeriesSpec, load_run

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("av")

EXAMPLE = Path(__file__).parents[1] / "examples" / "05_onnxruntime_only.py"
BUNDLE = ["export.json", "labels.json", "preprocessing.json"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """``cnnlstm export RUN --int8`` of the tiny video run: the run, the folder and what the command printed."""
    run, _ = tiny_run
    out = tmp_path_factory.mktemp("bundle") / "exp"
    result = CliRunner().invoke(main, ["export", str(run), "--int8", "--out", str(out), "--sample", "4"])
    assert result.exit_code == 0, result.output
    return run, out, result.output


@pytest.fixture(scope="module")
def example():
    """The example script as a module (its functions, without running main)."""
    spec = importlib.util.spec_from_file_location("onnxruntime_only", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read(folder: Path, name: str):
    return json.loads((folder / name).read_text())


def _session(path: Path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _test_videos(tiny_videos, n: int | None = None) -> list[Path]:
    return sorted(Path(tiny_videos, "test").rglob("*.mp4"))[:n]


# ---------------------------------------------------------------------------------------------- the files


def test_the_bundle_sits_beside_the_graphs_and_the_command_names_it(exported):
    _, out, text = exported
    graphs = ["model.int8.onnx", "model.onnx", "step.int8.onnx", "step.onnx"]
    assert sorted(p.name for p in out.iterdir()) == sorted(graphs + BUNDLE)
    assert f"{out / 'labels.json'}: 8 names, index = output index" in text
    assert f"{out / 'preprocessing.json'}: a video's 4 uniform frames, 24x24 RGB (FFmpeg bilinear)" in text
    assert f"{out / 'export.json'}: 4 artifacts: runtime, precision, inputs, outputs, checks; the step graph" in text


def test_labels_are_the_runs_classes_in_output_order(exported):
    run, out, _ = exported
    labels = _read(out, "labels.json")
    assert labels == load_run(run).classes == _read(run, "labels.json") and len(labels) == 8
    assert _read(out, "export.json")["labels"] == "labels.json"


def test_preprocessing_is_the_runs_clip_spec(exported):
    run, out, _ = exported
    r = load_run(run)
    spec = r.spec.for_scoring()
    prep = _read(out, "preprocessing.json")
    assert _read(out, "export.json")["preprocessing"] == "preprocessing.json"
    assert prep["format"] == 1 and prep["kind"] == "video-classify" and prep["input"] == "clip"
    want = spec.to_dict()
    assert {k: prep[k] for k in want} == want  # clip_len, size, channels, sampling, stride, pad, mean, std
    assert prep["clip_len"] == 4 and prep["size"] == [24, 24] and prep["channels"] == 3 and prep["pad"] == "repeat"
    assert prep["sampling"] == "uniform" and prep["scale"] == 255.0
    assert prep["resize"]["interpolation"] == "bilinear" and prep["resize"]["pixel_format"] == "rgb24"
    assert prep["layout"] == r.model.config.layout == "NTCHW" and prep["input_shape"] == ["N", 4, 3, 24, 24]
    assert prep["motion"] == {"mode": "none", "in_graph": True, "note": "the model reads plain frames"}
    steps = "\n".join(prep["steps"])
    for words in ("min(floor((k + 0.5) * frames / clip_len), frames - 1)", "interpolation='BILINEAR'", "x / 255"):
        assert words in steps


def test_export_json_lists_every_artifact_as_onnxruntime_reads_it(exported):
    _, out, _ = exported
    manifest = _read(out, "export.json")
    assert manifest["format"] == 1 and manifest["kind"] == "video-classify" and manifest["cnnlstm"] == cl.__version__
    arts = {a["path"]: a for a in manifest["artifacts"]}
    assert sorted(arts) == sorted(p.name for p in out.glob("*.onnx"))
    for path, a in arts.items():
        sess = _session(out / path)
        for mine, theirs in ((a["inputs"], sess.get_inputs()), (a["outputs"], sess.get_outputs())):
            assert [(d["name"], d["shape"], d["dtype"]) for d in mine] == [
                (t.name, t.shape, "float32") for t in theirs
            ], path
        assert a["runtime"] == "onnxruntime"
        assert a["precision"] == ("int8" if ".int8." in path else "fp32")
        assert a["kind"] == ("step" if path.startswith("step") else "clip")
    assert arts["model.onnx"]["inputs"] == [{"name": "clip", "shape": ["N", "T", 3, 24, 24], "dtype": "float32"}]
    assert arts["model.onnx"]["outputs"] == [{"name": "logits", "shape": ["N", 8], "dtype": "float32"}]
    assert [d["name"] for d in arts["step.onnx"]["inputs"]] == ["frame", "h", "c"]
    assert arts["step.onnx"]["inputs"][1]["shape"] == [1, "N", 8]


def test_export_json_holds_the_checks_each_artifact_passed(exported):
    _, out, text = exported
    arts = {a["path"]: a for a in _read(out, "export.json")["artifacts"]}
    clip, step = arts["model.onnx"]["checks"], arts["step.onnx"]["checks"]
    assert len(clip) == 6 and len(step) == 2  # 2 batches x 3 lengths; 2 batches of 6 streamed frames
    for check in clip + step:
        assert 0 <= check["max_abs_diff"] <= check["tolerance"] == 1e-4
        assert f"{check['input']}: max |onnx - torch| = {check['max_abs_diff']:.2e}" in text  # what was printed
    assert {c["input"] for c in clip} >= {"clip (1, 2, 3, 24, 24)", "clip (7, 7, 3, 24, 24)"}
    for path in ("model.int8.onnx", "step.int8.onnx"):  # int8: checked against float32 on clips kept out of calibration
        (agree,) = arts[path]["checks"]
        assert agree["input"].startswith("4 real clips not used in calibration")
        assert 0 <= agree["top1_agreement_with_fp32"] <= 1 and agree["max_abs_diff_vs_fp32"] >= 0
        line = f"{agree['input']}: top-1 agreement with float32 {agree['top1_agreement_with_fp32']:.3f}, "
        assert line + f"max |int8 - float32| = {agree['max_abs_diff_vs_fp32']:.2e}" in text  # what was printed
        assert arts[path]["calibration"].startswith("24 real clips")  # the training split's 8 x 3 videos


def test_the_step_convention_streams_a_clip_to_the_clip_graphs_logits(exported):
    _, out, _ = exported
    manifest = _read(out, "export.json")
    conv = manifest["streaming"]
    assert conv["inputs"] == ["frame", "h", "c"] and conv["outputs"] == ["logits", "h_out", "c_out"]
    assert conv["carry"] == {"h_out": "h", "c_out": "c"} and "h and c all zeros" in conv["start"]
    step = next(a for a in manifest["artifacts"] if a["path"] == "step.onnx")
    clip = np.random.default_rng(0).standard_normal((2, 5, 3, 24, 24)).astype(np.float32)  # (N, T, C, H, W)
    state = {d["name"]: np.zeros([2 if s == "N" else s for s in d["shape"]], np.float32) for d in step["inputs"][1:]}
    sess = _session(out / "step.onnx")
    for t in range(clip.shape[1]):  # the convention, as written: zeros, then each *_out fed back as its input
        logits, *carried = sess.run(None, {"frame": clip[:, t], **state})
        state = {conv["carry"][name]: value for name, value in zip(conv["outputs"][1:], carried)}
    whole = _session(out / "model.onnx").run(None, {"clip": clip})[0]
    np.testing.assert_allclose(logits, whole, atol=1e-4)


# ---------------------------------------------------------------------------------------------- the example


def test_the_example_makes_the_clip_cnnlstm_makes(exported, example, tiny_videos):
    run, out, _ = exported
    prep = _read(out, "preprocessing.json")
    spec = load_run(run).spec.for_scoring()
    for video in _test_videos(tiny_videos):
        ds = VideoDataset([VideoItem(str(video), 0)], ["x"], spec=spec, warn=False)
        frames = example.count_frames(video)
        indices = example.uniform_indices(frames, prep["clip_len"], prep["pad"])
        assert frames == ds.infos[0].frames and indices.tolist() == ds.clip_indices(0)[0].tolist()
        raw = example.read_frames(video, indices, prep["size"], prep["resize"]["pixel_format"])
        mine = example.to_model_input(raw, prep)  # (1, T, C, H, W)
        np.testing.assert_allclose(mine[0], ds[0]["video"].numpy(), atol=1e-6, err_msg=str(video))
        channels_last = example.to_model_input(raw, {**prep, "layout": "NTHWC"})  # (1, T, H, W, C)
        np.testing.assert_allclose(channels_last[0], ds[0]["video"].numpy().transpose(0, 2, 3, 1), atol=1e-6)


def test_the_examples_frame_rule_and_gray_decoding_are_cnnlstms(example, tiny_videos):
    from cnnlstm.data.sampling import uniform_indices
    from cnnlstm.data.video import read_frames

    for frames in range(1, 30):
        for t in range(1, 9):
            for pad in ("repeat", "lengths"):
                assert example.uniform_indices(frames, t, pad).tolist() == uniform_indices(frames, t, pad).tolist()
    video, indices = _test_videos(tiny_videos, 1)[0], np.array([0, 3, 3, 1])  # any order, repeats
    gray = example.read_frames(video, indices, (20, 28), "gray")
    assert gray.shape == (4, 20, 28, 1)
    np.testing.assert_array_equal(gray, read_frames(video, indices, (20, 28), channels=1))


def _run_example(*args: str) -> subprocess.CompletedProcess:
    """The example in a fresh interpreter where ``import torch`` and ``import cnnlstm`` fail."""
    blocked = (
        "import runpy, sys; sys.modules['torch'] = sys.modules['cnnlstm'] = None; "
        f"sys.argv = [{str(EXAMPLE)!r}, *sys.argv[1:]]; runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')"
    )
    return subprocess.run([sys.executable, "-c", blocked, *args], capture_output=True, text=True, timeout=120)


def test_the_example_without_torch_classifies_as_cnnlstm_predict_does(exported, tiny_videos):
    run, out, _ = exported
    videos = _test_videos(tiny_videos, 3)
    predicted = CliRunner().invoke(
        main, ["predict", str(run), *map(str, videos), "--top-k", "3", "--json", "--precision", "32"]
    )
    assert predicted.exit_code == 0, predicted.output
    for video, want in zip(videos, json.loads(predicted.output)):
        done = _run_example(str(out), str(video), "--top-k", "3")
        assert done.returncode == 0, done.stderr
        header, *lines = done.stdout.strip().splitlines()
        assert header.startswith(f"{video}: frames ") and "input (1, 4, 3, 24, 24) NTCHW" in header
        got = [line.strip().rsplit(maxsplit=1) for line in lines]
        assert [label for label, _ in got] == [t["label"] for t in want["top"]], done.stdout
        for (_, prob), t in zip(got, want["top"]):
            assert abs(float(prob) - t["prob"]) <= 1e-4  # predict rounds to 4 decimals, the example prints 6


# ---------------------------------------------------------------------------------------------- other runs


def test_torchscript_artifacts_are_described_like_their_onnx_twins(exported, tiny_videos, tmp_path):
    run, out, _ = exported
    export_run(run, "torchscript", out=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.pt", "step.pt", *BUNDLE])
    onnx = {a["kind"]: a for a in _read(out, "export.json")["artifacts"] if a["precision"] == "fp32"}
    for a in _read(tmp_path, "export.json")["artifacts"]:
        assert a["runtime"] == "torchscript" and a["precision"] == "fp32"
        assert a["path"] == {"clip": "model.pt", "step": "step.pt"}[a["kind"]]
        assert a["inputs"] == onnx[a["kind"]]["inputs"] and a["outputs"] == onnx[a["kind"]]["outputs"]
        assert a["checks"] and all(c["max_abs_diff"] <= c["tolerance"] for c in a["checks"])
    assert _read(tmp_path, "labels.json") == _read(out, "labels.json")
    assert _read(tmp_path, "preprocessing.json") == _read(out, "preprocessing.json")
    refused = _run_example(str(tmp_path), str(_test_videos(tiny_videos, 1)[0]))  # the example wants an ONNX graph
    assert refused.returncode == 1 and "has no ONNX clip graph: run `cnnlstm export RUN`" in refused.stderr


def test_a_motion_input_model_says_the_graph_takes_the_differences(tiny_run, tmp_path):
    run = tmp_path / "motion"
    run.mkdir()
    for name in ("labels.json", "data.json"):
        shutil.copy(tiny_run[0] / name, run / name)
    cl.CNNLSTM.from_config(cl.CNNLSTM.from_pretrained(tiny_run[0]).config, motion="diff").save_pretrained(run)
    export_run(run)
    motion = _read(run / "export", "preprocessing.json")["motion"]
    assert motion["mode"] == "diff" and motion["in_graph"] is True and "never the differences" in motion["note"]
    conv = _read(run / "export", "export.json")["streaming"]
    assert conv["inputs"] == ["frame", "h", "c", "previous"] and conv["carry"]["previous_out"] == "previous"
    assert "previous = the stream's first frame itself" in conv["start"]


def _series_run(folder: Path, forecast: bool = False) -> Path:
    """A series run folder written by hand (untrained): 3 features, a classifier of 4 classes or a forecaster."""
    torch.manual_seed(0)
    mean, std = [3.0, -1.0, 0.5], [2.0, 0.5, 1.0]
    if forecast:
        model = cl.CNNLSTM(**preset("forecast"), layout="NTF", input_shape=(12, 3), head="forecast",
                           num_classes=2, head_options={"horizon": 5})  # fmt: skip
        data = DataSpec(
            Kind.SERIES_FORECAST, SeriesSpec("s.csv", 3, mean, std), forecast=ForecastSpec(12, 5, [0, 2], 5)
        )
        classes = ["a", "c"]
    else:
        model = cl.CNNLSTM(**preset("series"), layout="NTF", input_shape=(None, 3), num_classes=4)
        data, classes = DataSpec(Kind.SERIES_CLASSIFY, SeriesSpec("s.npz", 3, mean, std)), ["w", "x", "y", "z"]
    RunFolder(folder).write_model(model.eval(), classes, data)
    return folder


def test_a_series_run_gets_its_normaliser_and_no_step(tmp_path):
    run = _series_run(tmp_path / "series")
    result = export_run(run)
    out = run / "export"
    prep, manifest = _read(out, "preprocessing.json"), _read(out, "export.json")
    assert _read(out, "labels.json") == ["w", "x", "y", "z"]
    assert prep["kind"] == "series-classify" and prep["layout"] == "NTF" and prep["input_shape"] == ["N", "T", 3]
    assert prep["features"] == 3 and prep["mean"] == [3.0, -1.0, 0.5] and prep["std"] == [2.0, 0.5, 1.0]
    assert prep["motion"]["mode"] == "none" and "forecast" not in prep
    assert "streaming" not in manifest and manifest["no_step"]  # bidirectional, or a series model
    assert [a["path"] for a in manifest["artifacts"]] == ["model.onnx"]
    assert f"{out / 'preprocessing.json'}: a series' 3 features, (x - mean) / std, NTF" in result.lines()
    # the steps as written, applied to a raw series, give the model's logits
    raw = np.random.default_rng(1).normal(3, 2, size=(9, 3)).astype(np.float32)  # (T, F)
    x = ((raw - np.float32(prep["mean"])) / np.float32(prep["std"]))[None]  # (1, T, F)
    got = _session(out / "model.onnx").run(None, {"clip": x})[0]
    with torch.no_grad():
        want = load_run(run).model(torch.from_numpy(load_run(run).spec.normalizer(raw))[None]).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_a_forecaster_gets_its_windows(tmp_path):
    run = _series_run(tmp_path / "forecast", forecast=True)
    export_run(run, "torchscript")
    prep, manifest = _read(run / "export", "preprocessing.json"), _read(run / "export", "export.json")
    assert prep["forecast"] == {"lookback": 12, "horizon": 5, "targets": [0, 2]}
    assert prep["input_shape"] == ["N", 12, 3] and "window's own level" in "\n".join(prep["steps"])
    (art,) = manifest["artifacts"]
    assert art["outputs"] == [{"name": "logits", "shape": ["N", 5, 2], "dtype": "float32"}]
    assert art["inputs"] == [{"name": "clip", "shape": ["N", "T", 3], "dtype": "float32"}]
    assert "horizon" in manifest["outputs"]
