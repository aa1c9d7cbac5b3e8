"""The opt-in bfloat16 inference path: close to float32, float32 out, training untouched, streaming agrees."""

import pytest
import torch

from cnnlstm import CNNLSTM
from cnnlstm.errors import ConfigError


def _model(**kw):
    torch.manual_seed(0)
    return CNNLSTM(
        input_shape=(None, 3, 32, 32), hidden_size=32, num_classes=5, backbone_options={"channels": (8, 16)}, **kw
    )


@pytest.mark.filterwarnings("ignore:this CPU has no native bfloat16")
def test_bf16_inference_is_close_to_float32_and_returns_float32():
    m = _model(head="frames").eval()
    x = torch.randn(2, 6, 3, 32, 32)
    with torch.inference_mode():
        ref = m(x)
        got = m.set_precision("bf16")(x)
    assert got.dtype == torch.float32
    err = (got - ref).abs().max().item()
    assert 0 < err < 0.05 * ref.abs().max().item()  # bf16 rounding shows, but only as rounding


@pytest.mark.filterwarnings("ignore:this CPU has no native bfloat16")
def test_bf16_leaves_training_in_float32():
    m = _model()
    x = torch.randn(2, 4, 3, 32, 32)
    m.train()
    ref = m(x)
    m.set_precision("bf16")
    assert torch.equal(m(x), ref)  # autocast applies at inference only


@pytest.mark.filterwarnings("ignore:this CPU has no native bfloat16")
def test_bf16_streaming_matches_the_bf16_forward_and_keeps_a_float32_state():
    m = _model(head="frames").eval().set_precision("bf16")
    x = torch.randn(2, 6, 3, 32, 32)
    with torch.inference_mode():
        whole = m(x)
        s = m.stream()
        steps = torch.stack([s.step(x[:, t]) for t in range(6)], 1)
    assert steps.dtype == torch.float32 and all(h.dtype == torch.float32 for h in s.state)
    assert (steps - whole).abs().max().item() < 0.05 * whole.abs().max().item()


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(ConfigError, match="expected one of 32, bf16"):
        _model().set_precision("fp8")
