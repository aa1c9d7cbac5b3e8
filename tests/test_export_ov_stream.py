"""The stateful OpenVINO stream: the step with its state held in the runtime (ReadValue/Assign) equals the model's
whole clip to 1e-4 over three lengths, and a reset starts every stream over."""

import numpy as np
import pytest
import torch

import cnnlstm as cl
from cnnlstm import export as ex
from cnnlstm.errors import ExportError
from cnnlstm.export import ov_stream

ov = pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

TINY = {"input_shape": (None, 3, 32, 32), "hidden_size": 16, "num_classes": 4, "backbone_options": {"channels": (8,)}}
VARIANTS = {
    "lstm": {"bridge": "gap"},
    "gru-2layer": {"bridge": "grid", "rnn": "gru", "num_layers": 2},
    "motion-diff": {"bridge": "gap", "motion": "diff"},
    "frames-head": {"bridge": "gap", "head": "frames"},
    "convlstm": {"bridge": "gap", "rnn": "convlstm"},
}

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed=0, **kw) -> cl.CNNLSTM:
    torch.manual_seed(seed)
    return cl.CNNLSTM(**{**TINY, **kw}).eval()


def _request(path):
    return ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()


def _stream(request, clip: torch.Tensor) -> np.ndarray:
    """Each frame of ``clip`` ``(N, T, C, H, W)`` in one call: the logits after each, ``(N, T, classes)``."""
    return np.stack([request.infer({"frame": clip[:, t].numpy()})[0].copy() for t in range(clip.shape[1])], 1)


@pytest.fixture(scope="module", params=list(VARIANTS))
def streamed(request, tmp_path_factory):
    model = _model(**VARIANTS[request.param])
    report = ex.export_openvino_stream(model, tmp_path_factory.mktemp("stream") / "stream.xml")
    return request.param, model, report


def test_the_stream_equals_the_whole_clip_over_three_lengths(streamed):
    _, _, report = streamed
    assert report.kind == "openvino stream" and report.path.with_suffix(".bin").is_file()
    assert [c["input"] for c in report.checks] == [
        f"{t} frames ({b}, 3, 32, 32), reset first" for b in (1, 7) for t in (4, 8, 15)
    ]
    assert 0 <= report.max_abs_diff <= 1e-4


def test_one_input_one_output_and_the_state_inside(streamed):
    name, _, report = streamed
    request = _request(report.path)
    assert [i.get_any_name() for i in request.model_inputs] == ["frame"]
    assert [o.get_any_name() for o in request.model_outputs] == ["logits"]
    request.infer({"frame": np.zeros((2, 3, 32, 32), np.float32)})
    states = {s.name: s.state.shape for s in request.query_state()}
    want = {"h", "c"} if name != "gru-2layer" else {"h"}
    assert set(states) == want | ({"previous", "started"} if name == "motion-diff" else set())
    assert all(shape[1] == 2 for n, shape in states.items() if n in ("h", "c"))  # (layers, N, ...)


def test_a_reset_starts_the_streams_over_and_no_reset_carries_on(streamed):
    name, model, report = streamed
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 5, 3, 32, 32, generator=g), torch.randn(2, 6, 3, 32, 32, generator=g)
    request = _request(report.path)
    with torch.no_grad():
        whole_b, whole_ab = model(b).numpy(), model(torch.cat([a, b], 1)).numpy()
    last = (lambda y: y) if name == "frames-head" else (lambda y: y[:, -1])  # every frame's logits, or the clip's

    _stream(request, a)
    carried = _stream(request, b)  # no reset: clip b continues clip a
    np.testing.assert_allclose(last(carried), whole_ab[:, 5:] if name == "frames-head" else whole_ab, atol=1e-4)
    request.reset_state()
    fresh = _stream(request, b)  # a reset: clip b alone
    np.testing.assert_allclose(last(fresh), whole_b, atol=1e-4)
    assert np.abs(last(fresh) - last(carried)).max() > 1e-4  # the state did carry, and the reset did clear it
    request.reset_state()
    np.testing.assert_allclose(_stream(request, b[:1])[:, -1], _stream(_request(report.path), b[:1])[:, -1])


def test_a_failing_stream_check_is_an_error(tmp_path, monkeypatch):
    real = ov_stream.check_stream

    def worse(model, path, batches):
        return [{**c, "max_abs_diff": 1.0} for c in real(model, path, batches)]

    monkeypatch.setattr(ov_stream, "check_stream", worse)
    with pytest.raises(ExportError, match=r"stateful OpenVINO stream differs from the PyTorch clip by 1\.00e\+00"):
        ex.export_openvino_stream(_model(bridge="gap"), tmp_path / "s.xml", batches=(1,))
    assert (tmp_path / "s.xml").is_file()


def test_a_model_that_cannot_stream_says_what_to_change(tmp_path):
    with pytest.raises(cl.ConfigError, match="bidirectional=False"):
        ex.export_openvino_stream(_model(bridge="gap", bidirectional=True), tmp_path / "s.xml")
    with pytest.raises(cl.ConfigError, match=r"an OpenVINO IR is an \.xml file"):
        ex.export_openvino_stream(_model(bridge="gap"), tmp_path / "s.onnx")
