"""Static int8: calibration feeds (the step's state replayed as a stream carries it), ONNX Runtime QDQ with
per-channel weights, OpenVINO NNCF, and their agreement with float32 on a trained tiny run's clips."""

import numpy as np
import pytest
import torch

from cnnlstm import export as ex
from cnnlstm.errors import ConfigError
from cnnlstm.export.verify import runner, stream_logits
from cnnlstm.run import load_run

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tiny_run):
    """The tiny trained run: its model, training clips to calibrate on, and test clips to check on."""
    r = load_run(tiny_run[0])
    calib, kind = ex.sample_clips(r, 8, role="calibrate")
    clips, kind2 = ex.sample_clips(r, 8, role="check")
    assert kind == kind2 == "real"
    return r, calib, clips


@pytest.fixture(scope="module")
def fp32(trained, tmp_path_factory):
    """The run's verified float32 ONNX clip and step graphs."""
    model = trained[0].model
    d = tmp_path_factory.mktemp("fp32")
    return d, {k: ex.export_onnx(model, d / f"{k}.onnx", kind=k) for k in ("clip", "step")}


# ---------------------------------------------------------------------------------------------- calibration


def test_step_feeds_carry_the_state_a_stream_meets(trained):
    r, calib, _ = trained
    model, clips = r.model, calib[:3]  # (3, T=4, 3, 24, 24)
    feeds = list(ex.step_feeds(model, clips, batch=2))
    assert len(feeds) == 2 * clips.shape[1]  # batches of 2 and 1, T steps each
    assert [list(f) for f in feeds[:1]] == [["frame", "h", "c"]]
    streamer = model.stream()
    for t, feed in enumerate(feeds[:4]):  # the first batch: streams 0 and 1
        np.testing.assert_array_equal(feed["frame"], clips[:2, t].numpy())
        if t == 0:
            assert not feed["h"].any() and not feed["c"].any()  # a stream starts at zeros
        else:
            state = streamer.get_state()
            np.testing.assert_allclose(feed["h"], state["h"].numpy(), atol=1e-6)
            np.testing.assert_allclose(feed["c"], state["c"].numpy(), atol=1e-6)
        streamer.step(clips[:2, t])
    assert feeds[4]["h"].shape == (1, 1, 8) and not feeds[4]["h"].any()  # the next batch starts over
    assert np.abs(feeds[3]["h"]).max() > 1e-3


def test_step_feeds_of_a_motion_model_carry_the_previous_frame():
    import cnnlstm as cl

    model = cl.CNNLSTM(input_shape=(None, 3, 16, 16), hidden_size=4, motion="diff", backbone_options={"channels": (4,)})
    clips = torch.randn(2, 3, 3, 16, 16)
    feeds = list(ex.step_feeds(model.eval(), clips))
    assert list(feeds[0]) == ["frame", "h", "c", "previous"]
    np.testing.assert_array_equal(feeds[0]["previous"], clips[:, 0].numpy())  # the start: its own previous
    np.testing.assert_array_equal(feeds[2]["previous"], clips[:, 1].numpy())


def test_calibration_reader_is_onnxruntimes_protocol():
    from onnxruntime.quantization import CalibrationDataReader

    reader = ex.CalibrationReader(ex.clip_feeds(torch.zeros(5, 2, 3), batch=2))
    assert isinstance(reader, CalibrationDataReader) and len(reader) == 3
    assert [reader.get_next()["clip"].shape[0] for _ in range(3)] == [2, 2, 1] and reader.get_next() is None
    reader.rewind()
    assert reader.get_next()["clip"].shape == (2, 2, 3)


def test_calibration_and_check_clips_never_meet(trained, tmp_path):
    r, calib, clips = trained
    assert calib.shape[1:] == clips.shape[1:] == (4, 3, 24, 24)
    flat = {tuple(x.flatten()[:64].tolist()) for x in calib}
    assert not flat & {tuple(x.flatten()[:64].tolist()) for x in clips}  # training vs test videos
    # where the data is gone: random clips, deterministic, a different seed per role
    gone = load_run(r.path)
    gone.path = tmp_path  # no run.json here: no data folder to read
    a, kind = ex.sample_clips(gone, 3, role="calibrate")
    assert kind == "random" and torch.equal(a, ex.sample_clips(gone, 3, role="calibrate")[0])
    assert not torch.equal(a, ex.sample_clips(gone, 3, role="check")[0])
    with pytest.raises(ConfigError, match="unknown clip role 'train'"):
        ex.sample_clips(r, 3, role="train")


# ---------------------------------------------------------------------------------------------- ONNX Runtime


def test_static_qdq_quantizes_weights_per_channel(fp32, trained, tmp_path):
    _, graphs = fp32
    _, calib, _ = trained
    q = ex.quantize_onnx_static(graphs["clip"].path, tmp_path / "m.int8.onnx", ex.clip_feeds(calib))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.int8.onnx"]  # no pre-processed leftovers
    g = onnx.load(str(q)).graph
    ops = {n.op_type for n in g.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops and "ConvInteger" not in ops  # QDQ, not dynamic
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    conv_w = [n.input[1] for n in g.node if n.op_type == "Conv"]
    dq = {n.output[0]: n for n in g.node if n.op_type == "DequantizeLinear"}
    scales = [inits[dq[w].input[1]] for w in conv_w if w in dq]
    assert scales and all(s.ndim == 1 and s.size > 1 for s in scales)  # one scale per output channel
    assert any(inits[dq[w].input[0]].dtype == np.int8 for w in conv_w if w in dq)


@pytest.mark.parametrize("kind", ["clip", "step"])
def test_onnxruntime_int8_runs_and_agrees_with_float32(fp32, trained, kind):
    d, graphs = fp32
    r, calib, clips = trained
    rep = ex.quantize_export(r.model, graphs[kind], calib, clips, d, "real")
    assert rep.path == d / f"{kind}.int8.onnx" and rep.precision == "int8" and rep.kind == f"onnx {kind}"
    assert rep.size_bytes < graphs[kind].size_bytes
    (check,) = rep.checks
    assert check["input"] == "8 real clips not used in calibration" + (", streamed" if kind == "step" else "")
    # a trained tiny model: int8 keeps float32's top-1 class; its logits stay within 0.05 (theirs span about 0.7)
    assert check["top1_agreement_with_fp32"] >= 0.875 and check["max_abs_diff_vs_fp32"] < 0.05
    assert f"onnx {kind} int8 -> {rep.path}" in str(rep) and "top-1 agreement with float32" in str(rep)


def test_int8_step_streams_a_clip_to_float32s_answer(fp32, trained, tmp_path):
    """The int8 step, its own state carried for 4 frames, ends where the float32 clip graph does (top-1)."""
    _, graphs = fp32
    r, calib, clips = trained
    q8 = ex.quantize_export(r.model, graphs["step"], calib, clips, tmp_path).path
    last = stream_logits(r.model, runner(q8), clips)[:, -1]  # (N, classes) after the clip's last frame
    whole = runner(graphs["clip"].path)({"clip": clips.numpy()})[0]
    assert (last.argmax(-1) == whole.argmax(-1)).mean() >= 0.875


# ---------------------------------------------------------------------------------------------- OpenVINO


@pytest.mark.parametrize("kind", ["clip", "step"])
def test_openvino_int8_runs_and_agrees_with_float32(trained, tmp_path, kind):
    ov = pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    r, calib, clips = trained
    ir = ex.export_openvino(r.model, tmp_path / f"{kind}.xml", kind=kind)
    rep = ex.quantize_export(r.model, ir, calib, clips, tmp_path, "real")
    assert rep.path == tmp_path / f"{kind}.int8.xml" and (tmp_path / f"{kind}.int8.bin").is_file()
    graph = ov.Core().read_model(str(rep.path)).get_ops()
    assert "FakeQuantize" in {op.get_type_name() for op in graph}  # NNCF's int8, on the convolutions
    # the recurrence and the matrix products take float inputs: a state fake-quantized at every step drifts
    kept = [op for op in graph if op.get_type_name() in ex.quantize.OV_FLOAT_TYPES]
    assert kept, "no recurrence found in the IR"
    assert not any(_quantized_upstream(op) for op in kept)
    (check,) = rep.checks
    assert check["top1_agreement_with_fp32"] >= 0.875 and check["max_abs_diff_vs_fp32"] < 0.05


# ops that only move values: a FakeQuantize behind them still quantizes what the op downstream reads
_MOVES = {"Transpose", "Reshape", "Concat", "Broadcast", "Gather", "Unsqueeze", "Squeeze", "Slice", "Split",
          "StridedSlice", "Convert", "Identity"}  # fmt: skip


def _quantized_upstream(op) -> bool:
    """Whether a FakeQuantize feeds ``op``, directly or through ops that only move values."""
    todo = [i.get_source_output().get_node() for i in op.inputs()]
    while todo:
        node = todo.pop()
        if node.get_type_name() == "FakeQuantize":
            return True
        if node.get_type_name() in _MOVES:
            todo += [i.get_source_output().get_node() for i in node.inputs()]
    return False


def test_nncf_is_imported_with_its_telemetry_off_and_the_environment_kept(monkeypatch):
    pytest.importorskip("nncf")
    import os

    from cnnlstm.export import quantize

    monkeypatch.delenv("NNCF_CI", raising=False)
    quantize._nncf()
    assert "NNCF_CI" not in os.environ
