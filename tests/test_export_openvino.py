"""OpenVINO IR export: clip and step graphs equal PyTorch to 1e-4 in OpenVINO; ``cnnlstm export --runtime openvino``;
the errors that say what to install or choose."""

import ast
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import cnnlstm as cl
from cnnlstm import export as ex
from cnnlstm.cli import main
from cnnlstm.errors import ExportError, MissingDependencyError
from cnnlstm.export import openvino as ex_ov

ov = pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

TINY = {"hidden_size": 16, "num_classes": 4, "backbone_options": {"channels": (8, 16)}}
# (layout, input_shape, options): a clip of any length, and a fixed T, channels last, GRU of 2 layers
VARIANTS = {
    "lstm-gap": ("NTCHW", (None, 3, 32, 32), {"bridge": "gap"}),
    "gru-2layer-nthwc": ("NTHWC", (6, 32, 32, 3), {"bridge": "grid", "rnn": "gru", "num_layers": 2}),
}

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(layout="NTCHW", input_shape=(None, 3, 32, 32), seed=0, **kw) -> cl.CNNLSTM:
    """A tiny model with BatchNorm statistics that are not the identity."""
    torch.manual_seed(seed)
    model = cl.CNNLSTM(layout=layout, input_shape=input_shape, **{**TINY, **kw})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _compiled(path):
    return ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def _checked_shapes(report) -> set[tuple]:
    return {ast.literal_eval(re.search(r"\(.*\)", c["input"]).group()) for c in report.checks}


@pytest.fixture(scope="module", params=list(VARIANTS))
def ov_export(request, tmp_path_factory):
    """A variant's model and its verified OpenVINO clip and step IR."""
    layout, shape, kw = VARIANTS[request.param]
    model = _model(layout, shape, **kw)
    d = tmp_path_factory.mktemp("ov")
    clip = ex.export_openvino(model, d / "model.xml")
    step = ex.export_openvino(model, d / "step.xml", kind="step")
    return request.param, model, clip, step


def test_the_clip_ir_is_verified_at_two_batches_and_three_lengths(ov_export):
    name, _, clip, _ = ov_export
    assert clip.kind == "openvino clip" and clip.precision == "fp32"
    assert clip.path.is_file() and clip.path.with_suffix(".bin").is_file()
    assert clip.size_bytes == clip.path.stat().st_size + clip.path.with_suffix(".bin").stat().st_size
    if name == "gru-2layer-nthwc":  # T=6: checked at 3, 6, 11; channels last
        want = {(b, t, 32, 32, 3) for b in (1, 7) for t in (3, 6, 11)}
    else:
        want = {(b, t, 3, 32, 32) for b in (1, 7) for t in (4, 8, 15)}
    assert _checked_shapes(clip) == want and 0 <= clip.max_abs_diff <= 1e-4
    assert str(clip).count("max |openvino - torch| = ") == 6


def test_the_clip_ir_runs_new_batches_and_lengths_like_pytorch(ov_export):
    name, model, clip, _ = ov_export
    compiled = _compiled(clip.path)
    assert [i.get_any_name() for i in compiled.inputs] == ["clip"]
    assert [o.get_any_name() for o in compiled.outputs] == ["logits"]
    assert compiled.inputs[0].get_partial_shape()[:2].is_dynamic  # N and T
    g = torch.Generator().manual_seed(7)
    for n, t in ((3, 1), (2, 13)):
        x = torch.randn((n, t, 32, 32, 3) if name == "gru-2layer-nthwc" else (n, t, 3, 32, 32), generator=g)
        with torch.no_grad():
            np.testing.assert_allclose(compiled({"clip": x.numpy()})[0], model(x).numpy(), rtol=0, atol=1e-4)


def test_the_step_ir_carries_the_state_like_model_stream(ov_export):
    _, model, _, step = ov_export
    assert step.kind == "openvino step" and step.max_abs_diff <= 1e-4
    assert _checked_shapes(step) == {(1, *model.config.input_shape[1:]), (7, *model.config.input_shape[1:])}
    compiled = _compiled(step.path)
    lstm = model.config.rnn == "lstm"
    assert [i.get_any_name() for i in compiled.inputs] == ["frame", "h", *(["c"] if lstm else [])]
    assert [o.get_any_name() for o in compiled.outputs] == ["logits", "h_out", *(["c_out"] if lstm else [])]
    n, layers = 3, model.config.num_layers
    state = {k: np.zeros((layers, n, 16), np.float32) for k in (("h", "c") if lstm else ("h",))}
    streamer, g, outs = model.stream(), torch.Generator().manual_seed(8), []
    for _ in range(5):
        frame = torch.randn(n, *model.config.input_shape[1:], generator=g)
        ref = streamer.step(frame).numpy()
        result = compiled({"frame": frame.numpy(), **state})
        state = {k: result[i + 1] for i, k in enumerate(state)}
        np.testing.assert_allclose(result[0], ref, rtol=0, atol=1e-4)
        outs.append(result[0])
    for k, v in state.items():
        np.testing.assert_allclose(v, streamer.get_state()[k].numpy(), rtol=0, atol=1e-4)
    assert np.abs(outs[-1] - outs[0]).max() > 1e-3  # the carried state changes the answer


def test_a_motion_input_step_carries_the_previous_frame(tmp_path):
    model = _model(seed=5, bridge="gap", motion="diff")
    report = ex.export_openvino(model, tmp_path / "step.xml", kind="step")
    assert report.max_abs_diff <= 1e-4  # the check streams 6 frames, previous fed back as its own output
    assert [i.get_any_name() for i in _compiled(report.path).inputs] == ["frame", "h", "c", "previous"]


def test_failing_verification_is_an_error_and_the_files_stay(tmp_path, monkeypatch):
    model = _model()
    real = ex_ov.check_clip

    def check_after_a_change(m, run, path, batches):
        with torch.no_grad():
            m.head.fc.bias.add_(1e-2)  # the IR keeps the old bias
        return real(m, run, path, batches)

    monkeypatch.setattr(ex_ov, "check_clip", check_after_a_change)
    with pytest.raises(ExportError, match=r"OpenVINO clip graph differs from PyTorch by 1\.00e-02 \(> 1e-04\)"):
        ex.export_openvino(model, tmp_path / "m.xml")
    assert (tmp_path / "m.xml").is_file() and (tmp_path / "m.bin").is_file()


def test_refusals_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(cl.ConfigError, match=r"an OpenVINO IR is an \.xml file .* got 'm\.onnx'"):
        ex.export_openvino(_model(), tmp_path / "m.onnx")
    with pytest.raises(cl.ConfigError, match="unknown export kind 'frames'"):
        ex.export_openvino(_model(), tmp_path / "m.xml", kind="frames")
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    wanted = r"OpenVINO export needs .*'openvino'.*pip install 'cnnlstm\[edge\]'"
    with pytest.raises(MissingDependencyError, match=wanted):
        ex.export_openvino(_model(), tmp_path / "m.xml")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------- cnnlstm export


@pytest.fixture(scope="module")
def ov_exported(tiny_run, tmp_path_factory):
    """``cnnlstm export RUN --runtime openvino --int8`` of the tiny trained run."""
    run, _ = tiny_run
    out = tmp_path_factory.mktemp("ov-cli") / "exp"
    args = ["export", str(run), "--runtime", "openvino", "--int8", "--out", str(out), "--sample", "8"]
    result = CliRunner().invoke(main, [*args, "--calibration", "8"])
    assert result.exit_code == 0, result.output
    return run, out, result.output


def test_export_cli_openvino_writes_verified_ir_and_its_int8(ov_exported):
    run, out, text = ov_exported
    graphs = [f"{stem}{p}.{ext}" for stem in ("model", "step") for p in ("", ".int8") for ext in ("xml", "bin")]
    streams = ["stream.bin", "stream.xml", "stream.int8.bin", "stream.int8.xml"]
    bundle = ["export.json", "labels.json", "preprocessing.json"]
    assert sorted(p.name for p in out.iterdir()) == sorted(graphs + streams + bundle)
    assert f"openvino clip -> {out / 'model.xml'}" in text and f"openvino step -> {out / 'step.xml'}" in text
    assert f"openvino stream -> {out / 'stream.xml'}" in text and f"openvino stream int8 -> {out / 'stream.int8.xml'}"
    diffs = [float(d) for d in re.findall(r"max \|openvino - torch\| = (\S+)", text)]
    assert len(diffs) == 14 and max(diffs) <= 1e-4  # clip: 2 batches x 3 lengths; step: 2 streams; stream: as clip
    assert "int8 (NNCF post-training quantization), calibrated on 8 real clips:" in text
    held_out = r"8 real clips not used in calibration(?:, streamed)?"
    agree = re.findall(held_out + r": top-1 agreement with float32 ([\d.]+)", text)
    assert len(agree) == 3 and all(float(a) >= 0.75 for a in agree)  # clip, step, stream
    model = cl.CNNLSTM.from_pretrained(run).eval()  # the IR is the run's model
    x = torch.randn(2, 5, 3, 24, 24)
    with torch.no_grad():
        np.testing.assert_allclose(_compiled(out / "model.xml")({"clip": x.numpy()})[0], model(x), atol=1e-4)


def test_export_json_describes_the_ir_as_the_onnx_graphs_are_described(ov_exported, tmp_path):
    run, out, _ = ov_exported
    ex.export_run(run, out=tmp_path)  # the ONNX export of the same run
    onnx = {a["kind"]: a for a in json.loads((tmp_path / "export.json").read_text())["artifacts"]}
    manifest = json.loads((out / "export.json").read_text())
    arts = {a["path"]: a for a in manifest["artifacts"]}
    assert sorted(arts) == [
        "model.int8.xml", "model.xml", "step.int8.xml", "step.xml", "stream.int8.xml", "stream.xml"
    ]  # fmt: skip
    for name in ("stream.xml", "stream.int8.xml"):  # the stateful streams: frame in, logits out, the state inside
        stream = arts.pop(name)
        assert stream["kind"] == "stream" and stream["precision"] == ("int8" if ".int8." in name else "fp32")
        assert stream["inputs"] == onnx["step"]["inputs"][:1] and stream["outputs"] == onnx["step"]["outputs"][:1]
        assert stream["state"]["variables"] == ["h", "c"] and "reset_state()" in stream["state"]["reset"]
    (q,) = stream["checks"]  # the int8 stream against the float32 stream
    assert q["input"] == "8 real clips not used in calibration, streamed" and q["top1_agreement_with_fp32"] >= 0.75
    assert stream["calibration"].endswith("(the int8 step's quantization, its state held in OpenVINO)")
    for path, a in arts.items():
        assert a["runtime"] == "openvino" and a["weights"] == path.replace(".xml", ".bin")
        assert a["precision"] == ("int8" if ".int8." in path else "fp32") and a["kind"] == onnx[a["kind"]]["kind"]
        assert a["inputs"] == onnx[a["kind"]]["inputs"] and a["outputs"] == onnx[a["kind"]]["outputs"]  # N, T named
        assert a["compile"] == {"INFERENCE_PRECISION_HINT": "f32"}
    assert arts["model.xml"]["inputs"] == [{"name": "clip", "shape": ["N", "T", 3, 24, 24], "dtype": "float32"}]
    assert len(arts["model.xml"]["checks"]) == 6 and len(arts["step.xml"]["checks"]) == 2
    for c in arts["model.xml"]["checks"] + arts["step.xml"]["checks"]:
        assert 0 <= c["max_abs_diff"] <= c["tolerance"] == 1e-4
    (q,) = arts["step.int8.xml"]["checks"]
    assert q["input"] == "8 real clips not used in calibration, streamed" and q["top1_agreement_with_fp32"] >= 0.75
    assert arts["step.int8.xml"]["calibration"].startswith("8 real clips streamed through the float32 step")
    assert manifest["streaming"]["carry"] == {"h_out": "h", "c_out": "c"}


def test_export_run_refuses_before_writing(tiny_run, tmp_path, monkeypatch):
    run, _ = tiny_run
    with pytest.raises(cl.ConfigError, match="unknown runtime 'tflite': expected one of onnxruntime, openvino"):
        ex.export_run(run, runtime="tflite", out=tmp_path / "a")
    with pytest.raises(cl.ConfigError, match="--runtime openvino converts the verified ONNX graphs: use --format onnx"):
        ex.export_run(run, "torchscript", runtime="openvino", out=tmp_path / "b")
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'cnnlstm\[edge\]'"):
        ex.export_run(run, runtime="openvino", out=tmp_path / "c")
    assert not list(tmp_path.iterdir())


def test_export_cli_unknown_runtime_lists_the_choices(tiny_run, tmp_path):
    result = CliRunner().invoke(main, ["export", str(tiny_run[0]), "--runtime", "tflite", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "'tflite' is not one of 'onnxruntime', 'openvino'" in result.output


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the command tunes its allocator on Linux only")
def test_the_console_script_runs_openvino_in_its_tuned_process(tiny_run, tmp_path):
    """The command re-executes itself with a faster allocator; OpenVINO's CPU plugin aborts beside a preloaded
    mimalloc, so a command naming OpenVINO must not get it."""
    cmd = [sys.executable, "-m", "cnnlstm.cli", "export", str(tiny_run[0]), "--runtime", "openvino"]
    done = subprocess.run([*cmd, "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "openvino step ->" in done.stdout and (tmp_path / "step.bin").is_file()
