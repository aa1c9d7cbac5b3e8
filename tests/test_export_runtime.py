"""``--runtime onnxruntime|openvino`` on evaluate, predict and stream: the run's exported graph in place of its
PyTorch model (:mod:`cnnlstm.export.runtime`), equal to PyTorch in float32, close to float32 in int8."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cnnlstm import export as ex
from cnnlstm.apps.stream import stream_video
from cnnlstm.cli import main
from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.export.runtime import RuntimeModel, load_for_runtime
from cnnlstm.run import load_run

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("nncf")

pytestmark = pytest.mark.usefixtures("one_thread")
RUNTIMES = ("onnxruntime", "openvino")


@pytest.fixture(scope="module")
def exports(tiny_run, tmp_path_factory):
    """The tiny run exported for each runtime with its int8 twins: ``{runtime: folder}``."""
    run, _ = tiny_run
    folders = {}
    for rt in RUNTIMES:
        out = tmp_path_factory.mktemp(rt) / "exp"
        args = ["export", str(run), "--runtime", rt, "--int8", "--out", str(out), "--sample", "4", "--calibration", "4"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        folders[rt] = out
    return folders


@pytest.fixture(scope="module")
def clips(tiny_run):
    """8 test clips of the tiny run ``(8, T=4, 3, 24, 24)`` and the PyTorch model's probabilities of them."""
    r = load_run(tiny_run[0])
    x, kind = ex.sample_clips(r, 8, role="check")
    assert kind == "real"
    with torch.inference_mode():
        return x, r.model(x).softmax(-1)


def _test_videos(tiny_videos) -> list[Path]:
    return sorted(Path(tiny_videos, "test").rglob("*.mp4"))


# ---------------------------------------------------------------------------------------------- the model


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_fp32_graph_gives_pytorchs_probabilities(tiny_run, exports, clips, runtime):
    r = load_for_runtime(tiny_run[0], runtime, "fp32", exports[runtime])
    assert isinstance(r.model, RuntimeModel) and r.precision == "fp32"
    x, ref = clips
    with r.model.autocast(r.precision):  # a no-op context, as the apps use it
        got = r.model(x).softmax(-1)
    assert got.shape == ref.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
    assert r.model.describe().startswith(f"{runtime} fp32 (")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_int8_agrees_with_fp32_on_most_clips(tiny_run, exports, clips, runtime):
    r = load_for_runtime(tiny_run[0], runtime, "int8", exports[runtime])
    x, ref = clips
    got = r.model(x).softmax(-1)
    assert r.model.clip["precision"] == "int8" and ".int8." in r.model.clip["path"]
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.75
    assert (got - ref).abs().max() < 0.2


def test_shorter_clips_run_trimmed_to_their_lengths(tiny_run, exports, clips):
    r = load_run(tiny_run[0])
    model = RuntimeModel(exports["onnxruntime"], "onnxruntime", "fp32")
    x = clips[0][:3]
    lengths = torch.tensor([4, 2, 3])
    with torch.inference_mode():
        ref = r.model(x, lengths)
    torch.testing.assert_close(model(x, lengths), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("runtime", "precision", "kind"),
    [
        ("onnxruntime", "fp32", "step"),
        ("openvino", "fp32", "stream"),
        ("openvino", "int8", "stream"),
        ("onnxruntime", "int8", "step"),
    ],
)
def test_the_streamer_steps_as_pytorchs(tiny_run, exports, clips, runtime, precision, kind):
    r = load_run(tiny_run[0])
    model = RuntimeModel(exports[runtime], runtime, precision)
    x = clips[0][:3]  # (3, T=4, 3, 24, 24)
    streamer, ref_streamer = model.stream(), r.model.stream()
    assert streamer.kind == kind
    for _ in range(2):  # a reset starts the streams over
        with torch.inference_mode():
            for t in range(x.shape[1]):
                got, ref = streamer.step(x[:, t]).softmax(-1), ref_streamer.step(x[:, t]).softmax(-1)
                if precision == "fp32":
                    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
                else:
                    assert (got - ref).abs().max() < 0.2
        streamer.reset()
        ref_streamer.reset()


# ---------------------------------------------------------------------------------------------- the commands


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_predict_on_a_runtime_gives_torchs_probabilities(tiny_run, tiny_videos, exports, runtime):
    run, videos = str(tiny_run[0]), [str(v) for v in _test_videos(tiny_videos)]
    ref = json.loads(_invoke("predict", run, *videos, "--json", "--precision", "32"))  # float32 on both sides
    got = json.loads(
        _invoke(
            "predict",
            run,
            *videos,
            "--json",
            "--runtime",
            runtime,
            "--export",
            str(exports[runtime]),
            "--precision",
            "32",
        )
    )
    for a, b in zip(ref, got):
        assert [t["label"] for t in a["top"]][:1] == [t["label"] for t in b["top"]][:1]
        np.testing.assert_allclose([t["prob"] for t in a["top"]], [t["prob"] for t in b["top"]], atol=2e-4)
    out = _invoke(
        "predict", run, videos[0], "--runtime", runtime, "--precision", "int8", "--export", str(exports[runtime])
    )
    assert f"ran on: {runtime} int8" in out


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_evaluate_on_a_runtime_measures_torchs_accuracy(tiny_run, tiny_videos, exports, runtime, tmp_path):
    run, data, exp = str(tiny_run[0]), str(tiny_videos), str(exports[runtime])
    ref = json.loads(_invoke("evaluate", run, data, "--json", "--precision", "32"))
    got = json.loads(
        _invoke("evaluate", run, data, "--json", "--runtime", runtime, "--export", exp, "--precision", "32")
    )
    assert got["confusion"] == ref["confusion"] and got["accuracy"] == ref["accuracy"]
    assert ref["runtime"] == "torch 32" and got["runtime"].startswith(f"{runtime} fp32 (")
    int8 = json.loads(
        _invoke("evaluate", run, data, "--json", "--runtime", runtime, "--precision", "int8", "--export", exp)
    )
    assert abs(int8["accuracy"] - ref["accuracy"]) <= 0.25
    assert "ran on: " + runtime in _invoke("evaluate", run, data, "--runtime", runtime, "--export", exp)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_stream_on_a_runtime_streams_as_torch(tiny_run, tiny_videos, exports, runtime, tmp_path):
    run, video = tiny_run[0], _test_videos(tiny_videos)[0]
    ref = stream_video(run, video)
    got = stream_video(load_for_runtime(run, runtime, "fp32", exports[runtime]), video)
    np.testing.assert_allclose(got["probs"], ref["probs"], atol=1e-4)
    assert got["runtime"].startswith(f"{runtime} fp32")
    png = tmp_path / "t.png"
    out = _invoke(
        "stream",
        str(run),
        str(video),
        "--runtime",
        runtime,
        "--precision",
        "int8",
        "--export",
        str(exports[runtime]),
        "--plot",
        str(png),
    )
    assert f"ran on: {runtime} int8" in out and png.is_file()


# ---------------------------------------------------------------------------------------------- the errors


def test_no_export_folder_names_the_export_command(tiny_run, tiny_videos):
    run = str(tiny_run[0])
    result = CliRunner().invoke(main, ["evaluate", run, str(tiny_videos), "--runtime", "onnxruntime"])
    assert result.exit_code != 0
    assert "no export folder" in result.output and f"cnnlstm export {run} --runtime onnxruntime" in result.output


def test_a_missing_artifact_names_the_command_that_makes_it(tiny_run, exports, tmp_path):
    with pytest.raises(
        ConfigError, match=r"has no onnxruntime fp32 clip artifact .*cnnlstm export .* --runtime onnxruntime --out"
    ):
        load_for_runtime(tiny_run[0], "onnxruntime", "fp32", exports["openvino"])
    fp32_only = tmp_path / "fp32"
    _invoke("export", str(tiny_run[0]), "--out", str(fp32_only))
    with pytest.raises(ConfigError, match=r"no onnxruntime int8 clip artifact .*--runtime onnxruntime --int8"):
        load_for_runtime(tiny_run[0], "onnxruntime", "int8", fp32_only)


def test_unknown_runtimes_and_precisions_are_refused(tiny_run, tiny_videos, exports):
    result = CliRunner().invoke(main, ["predict", str(tiny_run[0]), "x.mp4", "--runtime", "tflite"])
    assert result.exit_code == 2 and "'tflite' is not one of 'torch', 'onnxruntime', 'openvino'" in result.output
    with pytest.raises(ConfigError, match="int8 runs an exported graph: add --runtime onnxruntime"):
        load_for_runtime(tiny_run[0], "torch", "int8")
    with pytest.raises(ConfigError, match="bf16 runs in torch or openvino, not in onnxruntime"):
        load_for_runtime(tiny_run[0], "onnxruntime", "bf16", exports["onnxruntime"])


def test_the_run_export_folder_keeps_both_runtimes_and_refuses_other_weights(tiny_run, tiny_videos, tmp_path):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(tiny_run[0], run)
    video = str(_test_videos(tiny_videos)[0])
    _invoke("export", str(run))  # RUN/export: onnxruntime
    _invoke("export", str(run), "--runtime", "openvino")  # beside it: the ONNX Runtime graphs stay listed
    manifest = json.loads((run / "export" / "export.json").read_text())
    assert {e["runtime"] for e in manifest["artifacts"]} == {"onnxruntime", "openvino"}
    assert manifest["weights"].startswith("sha256:")
    ref = json.loads(_invoke("predict", str(run), video, "--json", "--precision", "32"))
    for rt in RUNTIMES:  # no --export: RUN/export
        got = json.loads(_invoke("predict", str(run), video, "--json", "--runtime", rt, "--precision", "32"))
        np.testing.assert_allclose([t["prob"] for t in got[0]["top"]], [t["prob"] for t in ref[0]["top"]], atol=2e-4)
    manifest["weights"] = "sha256:" + "0" * 64  # as if the run had been trained again since the export
    (run / "export" / "export.json").write_text(json.dumps(manifest))
    with pytest.raises(
        ConfigError, match=r"other weights than .*model.safetensors .* export again with `cnnlstm export"
    ):
        load_for_runtime(run, "onnxruntime")


def test_openvino_bf16_runs_where_the_cpu_computes_in_bfloat16_else_says_so(tiny_run, exports, clips):
    import openvino as ov

    native = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if not native:
        with pytest.raises(ConfigError, match="needs a CPU that computes in bfloat16 natively"):
            load_for_runtime(tiny_run[0], "openvino", "bf16", exports["openvino"])
        return
    r = load_for_runtime(tiny_run[0], "openvino", "bf16", exports["openvino"])
    x, ref = clips
    got = r.model(x).softmax(-1)
    assert r.model.describe().startswith("openvino bf16") and r.model.clip["precision"] == "fp32"
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.75 and (got - ref).abs().max() < 0.1
    assert r.model.stream().kind == "stream"


def _series_run(folder: Path, steps: int | None, name: str = "series"):
    """An untrained series classifier's run folder, exported for ONNX Runtime: its model and the loaded run."""
    import cnnlstm as cl
    from cnnlstm.presets import preset
    from cnnlstm.run import DataSpec, Kind, RunFolder, SeriesSpec

    torch.manual_seed(0)
    model = cl.CNNLSTM(**preset(name), layout="NTF", input_shape=(steps, 3), num_classes=4).eval()
    data = DataSpec(Kind.SERIES_CLASSIFY, SeriesSpec("s.npz", 3, [0.0] * 3, [1.0] * 3))
    RunFolder(folder).write_model(model, ["w", "x", "y", "z"], data)
    ex.export_run(folder)
    return model, load_for_runtime(folder, "onnxruntime")


def test_a_series_run_runs_padded_series_trimmed_and_refuses_to_stream(tmp_path):
    model, r = _series_run(tmp_path / "s", None)
    assert r.model.fixed_steps is None and r.model.t_axis == 1
    x, lengths = torch.randn(3, 9, 3), torch.tensor([9, 5, 7])  # (N, T, F), padded after each series' end
    with torch.inference_mode():
        ref = model(x, lengths)
    torch.testing.assert_close(r.model(x, lengths), ref, atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match="no streaming step"):
        r.model.stream()


def test_a_graph_of_one_static_t_refuses_other_lengths(tmp_path):
    model, r = _series_run(tmp_path / "s", 8, "lstm-fcn")  # a dimension-shuffled LSTM reads T as its features
    assert r.model.fixed_steps == 8
    x = torch.randn(2, 8, 3)  # (N, T=8, F)
    torch.testing.assert_close(r.model(x), model(x).detach(), atol=1e-4, rtol=0)
    with pytest.raises(ShapeError, match=r"takes T=8 frames .* got a clip of 6"):
        r.model(torch.randn(2, 6, 3))
    with pytest.raises(ShapeError, match="takes whole clips of T=8; got shorter ones"):
        r.model(x, torch.tensor([8, 5]))
