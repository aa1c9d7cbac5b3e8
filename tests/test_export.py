"""Export: ONNX clip and step graphs, TorchScript, each verified against PyTorch; int8; ``cnnlstm export``."""

import ast
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import cnnlstm as cl
from cnnlstm import export as ex
from cnnlstm.cli import main
from cnnlstm.errors import ExportError
from cnnlstm.export import onnx as ex_onnx

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

CLIP_BRIDGES = ("gap", "gmp", "grid", "flatten", "attention")
TINY = {"hidden_size": 16, "num_classes": 4, "backbone_options": {"channels": (8, 16)}}
# each exported clip model: (layout, input_shape, options)
VARIANTS = {
    **{b: ("NTCHW", (None, 3, 32, 32), {"bridge": b}) for b in CLIP_BRIDGES},
    "gru-2layer-nthwc": ("NTHWC", (6, 32, 32, 3), {"bridge": "grid", "rnn": "gru", "num_layers": 2}),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters, then eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
                m.weight.copy_(1 + torch.randn(m.weight.shape, generator=g) * 0.3)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
    return model.eval()


def _model(layout="NTCHW", input_shape=(None, 3, 32, 32), seed=0, **kw) -> cl.CNNLSTM:
    torch.manual_seed(seed)
    return _randomize_batchnorm(cl.CNNLSTM(layout=layout, input_shape=input_shape, **{**TINY, **kw}), seed)


def _session(path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _checked_shapes(report) -> set[tuple]:
    return {ast.literal_eval(re.search(r"\(.*\)", c["input"]).group()) for c in report.checks}


@pytest.fixture(scope="module", params=list(VARIANTS))
def clip_export(request, tmp_path_factory):
    layout, shape, kw = VARIANTS[request.param]
    model = _model(layout, shape, **kw)
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    report = ex.export_onnx(model, path)
    return request.param, model, report


@pytest.fixture(scope="module", params=["lstm-gap", "gru-2layer-nthwc"])
def step_export(request, tmp_path_factory):
    if request.param == "lstm-gap":
        model = _model(seed=1, bridge="gap")
    else:
        model = _model("NTHWC", (6, 32, 32, 3), seed=2, bridge="grid", rnn="gru", num_layers=2)
    path = tmp_path_factory.mktemp("onnx-step") / "step.onnx"
    return model, ex.export_onnx(model, path, kind="step")


# ---------------------------------------------------------------------- ONNX clip graph


def test_clip_export_is_verified_at_two_batches_and_three_lengths(clip_export):
    name, _, report = clip_export
    assert report.kind == "onnx clip" and report.path.is_file() and report.size_bytes > 0
    if name == "gru-2layer-nthwc":  # T=6 in input_shape: checked at 3, 6, 11; channels last
        want = {(b, t, 32, 32, 3) for b in (1, 7) for t in (3, 6, 11)}
    else:  # T=None: checked around 8
        want = {(b, t, 3, 32, 32) for b in (1, 7) for t in (4, 8, 15)}
    assert _checked_shapes(report) == want
    assert len(report.checks) == 6
    assert 0 <= report.max_abs_diff <= 1e-4
    assert report.max_abs_diff == max(c["max_abs_diff"] for c in report.checks)
    text = str(report)
    assert text.count("max |onnx - torch| = ") == 6 and str(report.path) in text


def test_clip_onnx_runs_at_new_batch_and_lengths_like_pytorch(clip_export):
    name, model, report = clip_export
    sess = _session(report.path)
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "clip" and out.name == "logits"
    assert isinstance(inp.shape[0], str) and isinstance(inp.shape[1], str)  # dynamic N and T
    assert out.shape[1] == 4
    g = torch.Generator().manual_seed(7)
    for n, t in ((3, 1), (2, 13), (5, 21)):
        shape = (n, t, 32, 32, 3) if name == "gru-2layer-nthwc" else (n, t, 3, 32, 32)
        x = torch.randn(shape, generator=g)
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(None, {"clip": x.numpy()})[0]
        assert got.shape == (n, 4)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)


def test_failing_verification_is_an_error_and_the_file_stays(tmp_path, monkeypatch):
    """The model changes after the export: the real verification must catch the difference and raise."""
    model = _model(bridge="gap")
    real_verify = ex_onnx._verify_clip

    def verify_after_a_change(m, path, batches):
        with torch.no_grad():
            m.head.fc.bias.add_(1e-2)  # the ONNX file keeps the old bias
        return real_verify(m, path, batches)

    monkeypatch.setattr(ex_onnx, "_verify_clip", verify_after_a_change)
    path = tmp_path / "drift.onnx"
    with pytest.raises(ExportError, match=r"differs from PyTorch by 1\.00e-02 \(> 1e-04\)") as err:
        ex.export_onnx(model, path)
    assert "max |onnx - torch| = 1.00e-02" in str(err.value)  # the report comes with the error
    assert path.is_file()  # kept for inspection
    assert isinstance(err.value, cl.CnnlstmError)


def test_export_refusals_are_config_errors(tmp_path):
    with pytest.raises(cl.ConfigError, match="bidirectional=False"):
        ex.export_onnx(_model(bidirectional=True), tmp_path / "bi.onnx", kind="step")
    with pytest.raises(cl.ConfigError, match="head='last'"):
        ex.export_torchscript(_model(head="mean"), tmp_path / "mean.pt", kind="step")
    series = cl.CNNLSTM(
        layout="NTF", input_shape=(None, 3), bridge="none", hidden_size=8, backbone_options={"causal": True}
    )
    with pytest.raises(cl.ConfigError, match="export series models whole"):
        ex.export_onnx(series, tmp_path / "series.onnx", kind="step")
    with pytest.raises(cl.ConfigError, match="unknown export kind 'frames'"):
        ex.export_onnx(_model(), tmp_path / "x.onnx", kind="frames")
    assert not list(tmp_path.iterdir())  # nothing was written


@pytest.mark.slow
def test_default_model_exports_and_verifies(tmp_path):
    model = cl.CNNLSTM().eval()  # (16, 3, 112, 112) reference
    report = ex.export_onnx(model, tmp_path / "default.onnx")
    assert _checked_shapes(report) == {(b, t, 3, 112, 112) for b in (1, 7) for t in (8, 16, 31)}
    assert report.max_abs_diff <= 1e-4
    step = ex.export_onnx(model, tmp_path / "default-step.onnx", kind="step")
    assert _checked_shapes(step) == {(1, 3, 112, 112), (7, 3, 112, 112)}
    assert step.max_abs_diff <= 1e-4


# ---------------------------------------------------------------------- ONNX step graph


def test_step_graph_carries_the_state_like_model_stream(step_export):
    model, report = step_export
    assert report.kind == "onnx step"
    assert _checked_shapes(report) == {(1, *model.config.input_shape[1:]), (7, *model.config.input_shape[1:])}
    assert report.max_abs_diff <= 1e-4
    sess = _session(report.path)
    lstm = model.config.rnn == "lstm"
    assert [i.name for i in sess.get_inputs()] == ["frame", "h", *(["c"] if lstm else [])]
    assert [o.name for o in sess.get_outputs()] == ["logits", "h_out", *(["c_out"] if lstm else [])]
    n, layers = 3, model.config.num_layers
    state = {k: np.zeros((layers, n, 16), np.float32) for k in (("h", "c") if lstm else ("h",))}
    streamer = model.stream()
    g = torch.Generator().manual_seed(8)
    outs = []
    for _ in range(5):
        frame = torch.randn(n, *model.config.input_shape[1:], generator=g)  # (N, C, H, W) or (N, H, W, C)
        ref = streamer.step(frame).numpy()
        logits, *new = sess.run(None, {"frame": frame.numpy(), **state})
        state = dict(zip(state, new))
        np.testing.assert_allclose(logits, ref, rtol=0, atol=1e-4)
        outs.append(logits)
    for k, v in state.items():
        np.testing.assert_allclose(v, streamer.get_state()[k].numpy(), rtol=0, atol=1e-4)
    assert np.abs(outs[-1] - outs[0]).max() > 1e-3  # the carried state changes the answer


# ---------------------------------------------------------------------- TorchScript


@pytest.mark.parametrize("name", list(VARIANTS))
def test_torchscript_clip_is_verified_and_loads_without_cnnlstm(name, tmp_path):
    layout, shape, kw = VARIANTS[name]
    model = _model(layout, shape, **kw)
    report = ex.export_torchscript(model, tmp_path / "m.pt")
    assert report.kind == "torchscript clip" and len(report.checks) == 6 and report.max_abs_diff <= 1e-4
    assert "max |torchscript - torch|" in str(report)
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(3, 13, *shape[1:])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-5)


def test_torchscript_step_streams_like_model_stream(tmp_path):
    model = _model(seed=3, bridge="attention", num_layers=2)
    report = ex.export_torchscript(model, tmp_path / "step.pt", kind="step")
    assert report.kind == "torchscript step" and report.max_abs_diff <= 1e-4
    assert _checked_shapes(report) == {(1, 3, 32, 32), (7, 3, 32, 32)}
    loaded = torch.jit.load(str(tmp_path / "step.pt"))
    h, c = torch.zeros(2, 2, 16), torch.zeros(2, 2, 16)
    streamer = model.stream()
    for _ in range(5):
        frame = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            logits, h, c = loaded(frame, h, c)
        torch.testing.assert_close(logits, streamer.step(frame), rtol=0, atol=1e-5)


def test_torchscript_failing_verification_raises(tmp_path):
    with pytest.raises(ExportError, match="TorchScript differs from PyTorch"):
        ex.export_torchscript(_model(), tmp_path / "m.pt", tol=-1.0)  # no difference is below -1


# ---------------------------------------------------------------------- int8


@pytest.fixture(scope="module")
def int8_pair(tmp_path_factory):
    """A model with a wide head and its float32 clip and step graphs."""
    model = _model(seed=4, bridge="gap", hidden_size=64)
    d = tmp_path_factory.mktemp("int8")
    clip = ex.export_onnx(model, d / "model.onnx").path
    step = ex.export_onnx(model, d / "step.onnx", kind="step").path
    return model, clip, step


@pytest.mark.parametrize("conv", [True, False])
def test_quantize_onnx_is_smaller_runs_and_mostly_agrees(int8_pair, tmp_path, conv):
    model, clip, _ = int8_pair
    q = ex.quantize_onnx(clip, tmp_path / "model.int8.onnx", conv=conv)
    assert q == tmp_path / "model.int8.onnx" and q.is_file()
    assert q.stat().st_size < clip.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx"]  # no pre-processed leftovers
    x = torch.randn(16, 5, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    got = _session(q).run(None, {"clip": x.numpy()})[0]
    assert got.shape == (16, 4) and np.isfinite(got).all()
    with torch.no_grad():
        ref = model(x).numpy()
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.75
    assert np.abs(got - ref).max() < 0.5  # quantized, not broken


def test_latency_ms_times_a_graph_in_its_runtime(int8_pair):
    _, clip, _ = int8_pair
    ms = ex.latency_ms(clip, {"clip": np.zeros((1, 4, 3, 32, 32), np.float32)}, repeats=3)
    assert isinstance(ms, float) and ms > 0


# ---------------------------------------------------------------------- cnnlstm export


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder trained for 1 epoch by the CLI on tiny moving-digit videos."""
    from cnnlstm.data.synthetic import make_moving_digits

    root = tmp_path_factory.mktemp("export")
    videos = make_moving_digits(
        root / "videos", train_per_class=2, test_per_class=1, sizes=((32, 32),), lengths=(8, 10)
    )
    out = root / "run"
    args = ["train", str(videos), "--out", str(out), "--backbone-channels", "4,8", "--bridge", "grid"]
    args += ["--hidden-size", "8", "--clip-len", "4", "--size", "24", "--epochs", "1", "--batch-size", "8"]
    result = CliRunner().invoke(main, [*args, "--workers", "0"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def test_export_cli_onnx_int8(tiny_run, tmp_path):
    out = tmp_path / "exp"
    result = CliRunner().invoke(main, ["export", str(tiny_run), "--int8", "--out", str(out), "--sample", "4"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert f"onnx clip -> {out / 'model.onnx'}" in text and f"onnx step -> {out / 'step.onnx'}" in text
    diffs = [float(d) for d in re.findall(r"max \|onnx - torch\| = (\S+)", text)]
    assert len(diffs) == 8 and max(diffs) <= 1e-4  # 2 batches x 3 lengths, and 2 batches of streamed frames
    assert re.search(r"clip \(7, 7, 3, 24, 24\)", text)  # lengths 2, 4, 7 around the run's clip length 4
    assert re.search(r"int8 \(ONNX Runtime static QDQ, weights per channel\), calibrated on 16 real clips:", text)
    held_out = r"4 real clips not used in calibration(?:, streamed)?"
    agree = re.findall(held_out + r": top-1 agreement with float32 ([.\d]+)", text)
    assert len(agree) == 2 and all(0 <= float(a) <= 1 for a in agree)
    sizes = [float(mb) for mb in re.findall(r"onnx clip(?: int8)? -> \S+ \(([\d.]+) MB\)", text)]
    assert len(sizes) == 2 and sizes[1] < sizes[0]  # int8 is smaller
    graphs = ["model.int8.onnx", "model.onnx", "step.int8.onnx", "step.onnx"]
    bundle = ["export.json", "labels.json", "preprocessing.json"]
    assert sorted(p.name for p in out.iterdir()) == sorted(graphs + bundle)
    # the exported file is the run's model
    model = cl.CNNLSTM.from_pretrained(tiny_run).eval()
    x = torch.randn(2, 5, 3, 24, 24)
    with torch.no_grad():
        np.testing.assert_allclose(_session(out / "model.onnx").run(None, {"clip": x.numpy()})[0], model(x), atol=1e-4)


def test_export_cli_torchscript_default_folder(tiny_run):
    result = CliRunner().invoke(main, ["export", str(tiny_run), "--format", "torchscript"])
    assert result.exit_code == 0, result.output
    folder = tiny_run / "export"
    assert (folder / "model.pt").is_file() and (folder / "step.pt").is_file()
    assert "torchscript clip ->" in result.output and "torchscript step ->" in result.output
    assert result.output.count("max |torchscript - torch|") == 8
    loaded = torch.jit.load(str(folder / "model.pt"))
    assert loaded(torch.zeros(3, 4, 3, 24, 24)).shape == (3, 8)


def test_export_cli_torchscript_int8_is_a_clear_error(tiny_run, tmp_path):
    result = CliRunner().invoke(
        main, ["export", str(tiny_run), "--format", "torchscript", "--int8", "--out", str(tmp_path)]
    )
    assert result.exit_code != 0
    assert "Error: --int8 quantizes ONNX graphs: use --format onnx" in result.output
    assert "Traceback" not in result.output


def test_export_cli_torchscript_int8_refuses_before_writing(tiny_run, tmp_path):
    out = tmp_path / "nothing"
    result = CliRunner().invoke(main, ["export", str(tiny_run), "--format", "torchscript", "--int8", "--out", str(out)])
    assert result.exit_code != 0
    assert not out.exists() or not list(out.iterdir())


def test_export_cli_model_that_cannot_stream_exports_only_the_clip(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "bi"
    run.mkdir()
    for name in ("labels.json", "data.json"):
        shutil.copy(tiny_run / name, run / name)
    cfg = cl.CNNLSTM.from_pretrained(tiny_run).config
    bi = cl.CNNLSTM.from_config(cfg, bidirectional=True)
    bi.save_pretrained(run)
    result = CliRunner().invoke(main, ["export", str(run), "--format", "torchscript"])
    assert result.exit_code == 0, result.output
    assert "no streaming-step graph: a bidirectional RNN" in result.output and "bidirectional=False" in result.output
    files = sorted(p.name for p in (run / "export").iterdir())
    assert files == ["export.json", "labels.json", "model.pt", "preprocessing.json"]  # the bundle, not a step graph


def test_export_cli_not_a_run(tmp_path):
    result = CliRunner().invoke(main, ["export", str(tmp_path)])
    assert result.exit_code != 0 and "not a finished cnnlstm run" in result.output


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_default_series_classifier_with_time_pooling_exports_at_any_length(tmp_path, fmt):
    from cnnlstm.build import preset

    torch.manual_seed(0)
    m = _randomize_batchnorm(cl.CNNLSTM(**preset("series"), layout="NTF", input_shape=(None, 3), num_classes=4))
    do = ex.export_onnx if fmt == "onnx" else ex.export_torchscript
    report = do(m, tmp_path / f"series.{fmt}", kind="clip")
    assert len(report.checks) == 6 and report.max_abs_diff <= 1e-4  # lengths 4, 8, 15: not all multiples of 4


@pytest.mark.filterwarnings("ignore:this CPU has no native bfloat16")
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_inside_a_bf16_block_writes_the_float32_graph(tmp_path, fmt):
    m = _model()
    do = ex.export_onnx if fmt == "onnx" else ex.export_torchscript
    with m.autocast("bf16"):
        report = do(m, tmp_path / f"m.{fmt}", kind="clip")
    assert report.max_abs_diff <= 1e-4  # checked against the float32 forward: a bf16 graph is ~1e-2 off
    x = torch.randn(2, 5, 3, 32, 32)
    with torch.inference_mode():
        ref = m(x)
        with m.autocast("bf16"):
            assert (m(x) - ref).abs().max() > 1e-4  # the block did make the model's own forward bf16


@pytest.mark.filterwarnings("ignore:this CPU has no native bfloat16", "ignore::DeprecationWarning")
def test_a_model_set_to_bf16_with_the_deprecated_set_precision_exports_its_float32_graph(tmp_path):
    m = _model().set_precision("bf16")
    report = ex.export_onnx(m, tmp_path / "m.onnx", kind="clip")
    assert report.max_abs_diff <= 1e-4
