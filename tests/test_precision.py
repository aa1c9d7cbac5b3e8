"""The opt-in bfloat16 inference path, chosen where inference runs (``with model.autocast("bf16"):``): close to
float32, float32 out, nothing stored in the model, streaming agrees; the deprecated ``set_precision`` still works."""

import pytest
import torch

from cnnlstm import CNNLSTM
from cnnlstm.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore:this CPU has no native bfloat16")


def _model(**kw):
    torch.manual_seed(0)
    return CNNLSTM(
        input_shape=(None, 3, 32, 32), hidden_size=32, num_classes=5, backbone_options={"channels": (8, 16)}, **kw
    )


def test_bf16_inference_is_close_to_float32_and_returns_float32():
    m = _model(head="frames").eval()
    x = torch.randn(2, 6, 3, 32, 32)
    with torch.inference_mode():
        ref = m(x)
        with m.autocast("bf16"):
            got = m(x)
    assert got.dtype == torch.float32
    err = (got - ref).abs().max().item()
    assert 0 < err < 0.05 * ref.abs().max().item()  # bf16 rounding shows, but only as rounding


def test_bf16_is_not_stored_in_the_model_so_training_stays_float32():
    m = _model()
    x = torch.randn(2, 4, 3, 32, 32)
    m.train()
    ref = m(x)
    with torch.inference_mode(), m.eval().autocast("bf16"):
        m(x)
    m.train()
    assert torch.equal(m(x), ref)  # the choice left with the with block
    assert not hasattr(m, "precision")


def test_32_turns_an_outer_autocast_off():
    m = _model().eval()
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.inference_mode():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16), m.autocast("32"):
            got = m(x)
    assert torch.equal(got, ref)


def test_bf16_streaming_matches_the_bf16_forward_and_keeps_a_float32_state():
    m = _model(head="frames").eval()
    x = torch.randn(2, 6, 3, 32, 32)
    with torch.inference_mode(), m.autocast("bf16"):
        ref = m(x)
        s = m.stream()
        steps = torch.stack([s.step(x[:, t]) for t in range(6)], 1)
    with torch.inference_mode():
        f32 = m(x)
    assert steps.dtype == torch.float32 and all(h.dtype == torch.float32 for h in s.state)
    assert (steps - ref).abs().max().item() < 0.05 * ref.abs().max().item()
    assert (steps - f32).abs().max().item() > 0  # the stream did run in bfloat16


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(ConfigError, match="expected one of 32, bf16"):
        _model().autocast("fp8")


def test_deprecated_set_precision_still_infers_in_bf16_and_leaves_training_alone():
    m = _model().eval()
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.inference_mode():
        ref = m(x)
        with pytest.warns(DeprecationWarning, match=r"model\.autocast"):
            m.set_precision("bf16")
        got = m(x)
        with m.autocast("32"):  # the call site's choice wins
            assert torch.equal(m(x), ref)
    assert got.dtype == torch.float32 and 0 < (got - ref).abs().max().item() < 0.05 * ref.abs().max().item()
    m.train()
    train_ref = _model().train()(x)
    assert torch.equal(m(x), train_ref)  # at inference only, as before
    with pytest.raises(ConfigError, match="expected one of 32, bf16"), pytest.warns(DeprecationWarning):
        m.set_precision("fp8")


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_only_where_the_cpu_computes_it_natively(monkeypatch, native):
    import cnnlstm.precision as model_module

    monkeypatch.setattr(model_module, "bf16_supported", lambda: native)
    assert model_module.resolve_precision("auto") == ("bf16" if native else "32")
    assert model_module.resolve_precision("auto", "cuda") == "32"  # the CPU's answer only for the CPU
    assert model_module.resolve_precision("bf16") == "bf16" and model_module.resolve_precision("32") == "32"
    m = _model(head="frames").eval()
    x = torch.randn(1, 3, 3, 32, 32)
    with torch.inference_mode():
        with m.autocast("auto"):
            got = m(x)
        with m.autocast("bf16" if native else "32"):
            want = m(x)
    assert torch.equal(got, want)


def test_a_run_loaded_with_auto_says_which_precision_it_chose(tiny_run, monkeypatch):
    import cnnlstm.precision as model_module
    from cnnlstm.export.runtime import load_for_runtime, ran_on

    for native, want in ((False, "torch 32"), (True, "torch bf16")):
        monkeypatch.setattr(model_module, "bf16_supported", lambda native=native: native)
        assert ran_on(load_for_runtime(tiny_run[0], "torch", "auto")) == want


def _fake_cpu(monkeypatch, tmp_path, flags: str) -> None:
    """This CPU as one whose /proc/cpuinfo lists ``flags``."""
    from cnnlstm._fast import onednn

    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(onednn, "CPUINFO", str(info))
    onednn.cpu_flags.cache_clear()
    onednn.bf16_native.cache_clear()


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu sse avx2 avx512f avx512bw avx512_vnni", False),  # an AVX-512 Xeon that only emulates bfloat16
        ("fpu sse avx2 avx512f avx512_vnni avx512_bf16", True),
        ("fpu sse avx2 amx_tile amx_bf16 amx_int8", True),
        ("fpu sse avx2", False),
    ],
)
def test_auto_precision_reads_the_cpus_own_flags(monkeypatch, tmp_path, flags, native):
    import cnnlstm
    from cnnlstm._fast import onednn
    from cnnlstm.export.runtime import chosen_precision
    from cnnlstm.precision import resolve_precision

    _fake_cpu(monkeypatch, tmp_path, flags)
    try:
        assert cnnlstm.bf16_supported() is native
        assert resolve_precision("auto") == ("bf16" if native else "32")
        assert chosen_precision("openvino", "auto") == ("bf16" if native else "32")  # torch's and OpenVINO's
        assert chosen_precision("onnxruntime", "auto") == "32"
    finally:
        onednn.cpu_flags.cache_clear()
        onednn.bf16_native.cache_clear()
