"""Streaming an exported model (:class:`~cnnlstm.export.runtime_stream.RuntimeStreamer`), on a model with motion
input: ``reset([i])`` starts stream ``i`` over while the others go on, in the step graph's explicit state and in
OpenVINO's stateful stream, as :meth:`cnnlstm.streaming.Streamer.reset` does in PyTorch (a restarted stream's next
frame is its first: its frame difference zero); and OpenVINO int8 streams in its stateful int8 stream, the int8 step
made stateful."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnlstm as cl
from cnnlstm.data.datasets import ClipSpec
from cnnlstm.errors import ShapeError
from cnnlstm.export import export_run
from cnnlstm.export.runtime import RuntimeModel
from cnnlstm.export.verify import runner, stream_logits
from cnnlstm.run import DataSpec, Kind, RunFolder

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("nncf")

pytestmark = pytest.mark.usefixtures("one_thread")

# (runtime, precision, the streamer's artifact kind)
STREAMERS = [("onnxruntime", "fp32", "step"), ("openvino", "fp32", "stream"), ("openvino", "int8", "stream")]


@pytest.fixture(scope="module")
def motion_run(tmp_path_factory) -> tuple[Path, cl.CNNLSTM]:
    """An untrained run of a model with motion input (frames and their differences, as the demo's), exported for
    both runtimes, OpenVINO's with int8 (calibrated on random clips): its folder and its PyTorch model."""
    torch.manual_seed(0)
    model = cl.CNNLSTM(input_shape=(4, 3, 16, 16), num_classes=4, hidden_size=8, bridge="grid", motion="stack",
                       backbone_options={"channels": (4,)}).eval()  # fmt: skip
    folder = tmp_path_factory.mktemp("motion") / "run"
    RunFolder(folder).write_model(model, list("abcd"), DataSpec(Kind.VIDEO_CLASSIFY, ClipSpec(4, (16, 16))))
    for runtime in ("onnxruntime", "openvino"):
        export_run(folder, runtime=runtime, int8=runtime == "openvino", sample=4, calibration=4)
    return folder, model


def _frames(seed: int = 1) -> torch.Tensor:
    """7 frames of 3 streams: ``(3, T=7, 3, 16, 16)``."""
    return torch.randn(3, 7, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("runtime", "precision", "kind"), STREAMERS)
def test_a_restarted_stream_is_a_fresh_one_and_the_others_go_on(motion_run, runtime, precision, kind):
    folder, model = motion_run
    exported = RuntimeModel(folder / "export", runtime, precision)
    x = _frames()
    streamer, untouched, fresh, torch_streamer = exported.stream(), exported.stream(), exported.stream(), model.stream()
    assert streamer.kind == kind
    for t in range(3):
        for s in (streamer, untouched, torch_streamer):
            s.step(x[:, t])
    streamer.reset([1])
    torch_streamer.reset([1])
    moved = 0.0
    for t in range(3, 7):
        got, ref = streamer.step(x[:, t]), untouched.step(x[:, t])
        torch.testing.assert_close(got[[0, 2]], ref[[0, 2]], atol=1e-4, rtol=0)  # streams 0 and 2 go on
        torch.testing.assert_close(got[1], fresh.step(x[1:2, t])[0], atol=1e-4, rtol=0)  # stream 1 starts over
        if precision == "fp32":
            torch.testing.assert_close(got, torch_streamer.step(x[:, t]), atol=1e-4, rtol=0)  # as PyTorch's Streamer
        moved = max(moved, float((got[1] - ref[1]).abs().max()))
    assert moved > 1e-3  # the state did carry, and the reset cleared stream 1's


@pytest.mark.parametrize(("runtime", "precision", "kind"), STREAMERS)
def test_resets_before_a_step_after_a_full_reset_and_out_of_range(motion_run, runtime, precision, kind):
    folder, _ = motion_run
    exported = RuntimeModel(folder / "export", runtime, precision)
    x = _frames(2)
    streamer, fresh = exported.stream(), exported.stream()
    streamer.reset([0])  # nothing under way yet: a no-op
    streamer.step(x[:, 0])
    streamer.step(x[:, 1])
    with pytest.raises(ShapeError, match=r"reset\(\[3\]\): there are 3 streams, numbered 0 to 2"):
        streamer.reset([3])
    streamer.reset()  # every stream over: a new number of streams may follow
    assert streamer.streams == 0
    for t in range(2, 5):
        torch.testing.assert_close(streamer.step(x[:2, t]), fresh.step(x[:2, t]), atol=1e-4, rtol=0)
    streamer.reset([0, 1])  # every stream, listed: the same as a fresh pair
    torch.testing.assert_close(streamer.step(x[:2, 5]), exported.stream().step(x[:2, 5]), atol=1e-4, rtol=0)


def test_export_json_says_how_to_restart_some_streams(motion_run):
    manifest = json.loads((motion_run[0] / "export" / "export.json").read_text())
    assert manifest["streaming"]["restart"].endswith("and their previous their next frame itself")
    streams = [a for a in manifest["artifacts"] if a["kind"] == "stream"]
    assert [a["precision"] for a in streams] == ["fp32", "int8"]
    for stream in streams:
        assert "query_state()" in stream["state"]["reset_one"]
        assert "previous and started on axis 0" in stream["state"]["reset_one"]


def test_openvino_int8_streams_in_the_int8_step_made_stateful(motion_run):
    folder, model = motion_run
    streamer = RuntimeModel(folder / "export", "openvino", "int8").stream()
    assert streamer.entry["path"] == "stream.int8.xml" and streamer.entry["precision"] == "int8"
    (check,) = streamer.entry["checks"]
    assert check["input"] == "4 random clips not used in calibration, streamed"
    assert 0 < check["max_abs_diff_vs_fp32"] < 0.5 and 0 <= check["top1_agreement_with_fp32"] <= 1
    x = _frames(3)  # (3, T=7, ...): longer than the clips it was checked on
    want = stream_logits(model, runner(folder / "export" / "step.int8.xml"), x)  # (3, 7, classes)
    got = torch.stack([streamer.step(x[:, t]) for t in range(7)], 1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)  # the same quantized step, its state held in OpenVINO
    manifest = json.loads((folder / "export" / "export.json").read_text())
    kinds = {(a["precision"], a["kind"]) for a in manifest["artifacts"] if a["runtime"] == "openvino"}
    assert ("int8", "stream") in kinds and ("int8", "step") in kinds


def test_an_int8_export_without_an_int8_stream_streams_in_its_step(motion_run, tmp_path):
    import shutil

    folder = shutil.copytree(motion_run[0] / "export", tmp_path / "export")
    manifest = json.loads((folder / "export.json").read_text())
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["path"] != "stream.int8.xml"]
    (folder / "export.json").write_text(json.dumps(manifest))  # as written before there was an int8 stream
    streamer = RuntimeModel(folder, "openvino", "int8").stream()
    assert streamer.kind == "step" and streamer.entry["path"] == "step.int8.xml"


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_the_runtime_runs_on_the_threads_it_is_given(motion_run, runtime):
    model = RuntimeModel(motion_run[0] / "export", runtime, "fp32", threads=1)
    compiled = model.compiled(model.clip)
    if runtime == "onnxruntime":
        assert compiled.get_session_options().intra_op_num_threads == 1
    else:
        assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    x = _frames(4)[:, :4]  # (3, T=4, ...)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), motion_run[1](x), atol=1e-4, rtol=0)
