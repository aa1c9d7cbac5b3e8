"""ConvLSTM: equals a hand-written step loop, shapes, lengths, the streaming step, the export path, errors."""

from __future__ import annotations

import importlib
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnlstm
from cnnlstm import ConvLSTM, diagnose
from cnnlstm.layers.bridges import bridge

C, D, H, W = 3, 4, 6, 5


pytestmark = pytest.mark.usefixtures("one_thread")


def _layer(seed: int = 0, **kw) -> ConvLSTM:
    torch.manual_seed(seed)
    return ConvLSTM(**{"in_channels": C, "hidden_size": D, **kw}).eval()


def _clip(n: int = 3, t: int = 5, seed: int = 1, c: int = C, h: int = H, w: int = W) -> torch.Tensor:
    return torch.randn(n, t, c, h, w, generator=torch.Generator().manual_seed(seed))


def _reference(layer: ConvLSTM, x: torch.Tensor, state=None):
    """The ConvLSTM written out by hand from its weights: per step, per layer, one conv over cat(x, h)."""
    n, t, _, hh, ww = x.shape
    layers = layer.num_layers
    if state is None:
        h = [x.new_zeros(n, layer.hidden_size, hh, ww) for _ in range(layers)]
        c = [x.new_zeros(n, layer.hidden_size, hh, ww) for _ in range(layers)]
    else:
        h, c = list(state[0]), list(state[1])
    outs = []
    for s in range(t):
        inp = x[:, s]
        for i in range(layers):
            cell = layer.cells[i]
            z = F.conv2d(torch.cat([inp, h[i]], 1), cell.weight, cell.bias, padding="same")
            gi, gf, gg, go = z.split(layer.hidden_size, dim=1)
            c[i] = torch.sigmoid(gf) * c[i] + torch.sigmoid(gi) * torch.tanh(gg)
            h[i] = torch.sigmoid(go) * torch.tanh(c[i])
            inp = h[i]
        outs.append(inp)
    return torch.stack(outs, 1), (torch.stack(h), torch.stack(c))


# ----------------------------------------------------------------------------- the recurrence itself


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")  # torch pads a copy: fine here
@pytest.mark.parametrize("kernel_size", [3, 1, (3, 5), 2])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_equals_a_hand_written_step_loop(num_layers, kernel_size):
    layer = _layer(num_layers=num_layers, kernel_size=kernel_size)
    x = _clip()
    with torch.no_grad():
        out, (h, c) = layer(x)
        ref, (h_ref, c_ref) = _reference(layer, x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(c, c_ref, rtol=0, atol=1e-6)
    assert out.abs().max() > 1e-2  # the check can fail: the outputs are not all zeros


def test_equals_the_loop_from_a_given_state():
    layer = _layer(num_layers=2)
    x = _clip(t=3)
    g = torch.Generator().manual_seed(7)
    state = (torch.randn(2, 3, D, H, W, generator=g), torch.randn(2, 3, D, H, W, generator=g))
    with torch.no_grad():
        out, (h, c) = layer(x, state=state)
        ref, (h_ref, c_ref) = _reference(layer, x, state)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close((h, c), (h_ref, c_ref), rtol=0, atol=1e-6)
    assert (out - layer(x)[0]).abs().max() > 1e-3  # the state matters


def test_the_forget_gate_starts_open_as_in_keras():
    layer = ConvLSTM(C, D, num_layers=2)
    for cell in layer.cells:
        assert cell.weight.shape[:2] == (4 * D, cell.in_channels)
        torch.testing.assert_close(cell.bias[D : 2 * D], torch.ones(D))
    assert [cell.in_channels for cell in layer.cells] == [C + D, D + D]
    assert ConvLSTM(C, D, bias=False).cells[0].bias is None


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 3),
    t=st.integers(1, 4),
    c=st.integers(1, 4),
    d=st.integers(1, 5),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    k=st.sampled_from([1, 2, 3, 5]),
    layers=st.integers(1, 3),
)
def test_shapes_over_random_sizes(n, t, c, d, h, w, k, layers):
    layer = ConvLSTM(c, d, kernel_size=k, num_layers=layers)
    with torch.no_grad():
        out, (hn, cn) = layer(torch.randn(n, t, c, h, w))
    assert out.shape == (n, t, d, h, w) == layer.output_shape((n, t, c, h, w))
    assert hn.shape == cn.shape == (layers, n, d, h, w) == layer.state_shape(n, h, w)
    torch.testing.assert_close(out[:, -1], hn[-1], rtol=0, atol=0)  # return_sequences' last step is the final h


def test_output_shape_keeps_unknown_sizes_and_checks_the_input():
    layer = ConvLSTM(8, 16)
    assert layer.output_shape((1, None, 8, 7, 7)) == (1, None, 16, 7, 7)
    with pytest.raises(cnnlstm.ShapeError, match="sequence of features"):
        layer.output_shape((1, 4, 8))


def test_gradients_reach_every_layer():
    layer = _layer(num_layers=2).train()
    out, (_, c) = layer(_clip())
    (out.square().mean() + c.mean()).backward()
    for cell in layer.cells:
        assert cell.weight.grad is not None and cell.weight.grad.abs().sum() > 0


def test_dropout_between_layers_in_training_only():
    layer = _layer(num_layers=2, dropout=0.5)
    x = _clip()
    with torch.no_grad():
        eval_out = layer(x)[0]
        torch.testing.assert_close(eval_out, _reference(layer, x)[0], rtol=0, atol=1e-6)
        layer.train()
        torch.manual_seed(0)
        a = layer(x)[0]
        torch.manual_seed(1)
        b = layer(x)[0]
    assert (a - b).abs().max() > 1e-4 and (a - eval_out).abs().max() > 1e-4
    one = _layer(num_layers=1, dropout=0.5).train()  # one layer: nothing between layers to drop
    with torch.no_grad():
        torch.testing.assert_close(one(x)[0], _reference(one, x)[0], rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- lengths


@pytest.mark.parametrize("num_layers", [1, 2])
def test_padded_steps_never_change_a_samples_state_or_output(num_layers):
    layer = _layer(num_layers=num_layers)
    lengths = [5, 3, 1]
    x = _clip(t=5)
    with torch.no_grad():
        out, (h, c) = layer(x, torch.tensor(lengths))
        noisy = x.clone()
        for i, n in enumerate(lengths):
            noisy[i, n:] = 100.0  # whatever the padding holds
        out_noisy, (h_noisy, c_noisy) = layer(noisy, torch.tensor(lengths))
        for i, n in enumerate(lengths):
            alone, (h_alone, c_alone) = layer(x[i : i + 1, :n])
            torch.testing.assert_close(out[i, :n], alone[0], rtol=0, atol=1e-6)
            assert out[i, n:].abs().max() == 0 if n < 5 else True  # padded steps give zeros
            torch.testing.assert_close(h[:, i], h_alone[:, 0], rtol=0, atol=1e-6)  # held past its length
            torch.testing.assert_close(c[:, i], c_alone[:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(out_noisy, out, rtol=0, atol=0)
    torch.testing.assert_close((h_noisy, c_noisy), (h, c), rtol=0, atol=0)


def test_full_lengths_equal_no_lengths():
    layer = _layer()
    x = _clip()
    with torch.no_grad():
        torch.testing.assert_close(layer(x, torch.tensor([5, 5, 5])), layer(x), rtol=0, atol=0)


def test_bad_lengths_raise_shape_error():
    layer = _layer()
    with pytest.raises(cnnlstm.ShapeError, match=r"ConvLSTM: every length must be in 1..T=5"):
        layer(_clip(), torch.tensor([6, 1, 1]))
    with pytest.raises(cnnlstm.ShapeError, match=r"lengths must be \(N,\) = \(3,\)"):
        layer(_clip(), torch.tensor([5, 1]))


# ----------------------------------------------------------------------------- the streaming step


@pytest.mark.parametrize("num_layers", [1, 2])
def test_steps_equal_the_whole_clip(num_layers):
    layer = _layer(num_layers=num_layers)
    x = _clip(t=6)
    with torch.no_grad():
        full, (h_full, c_full) = layer(x)
        state, outs = None, []
        for s in range(x.shape[1]):
            out, state = layer.step(x[:, s], state)
            outs.append(out)
    torch.testing.assert_close(torch.stack(outs, 1), full, rtol=0, atol=1e-5)
    torch.testing.assert_close(state, (h_full, c_full), rtol=0, atol=1e-5)


def test_step_checks_its_input_and_state():
    layer = _layer(num_layers=2)
    with pytest.raises(cnnlstm.ShapeError, match=r"one step's maps \(N, C=3, H, W\), got 5-D .*whole clip"):
        layer.step(_clip())
    with pytest.raises(cnnlstm.ShapeError, match=r"C=3.*got \(2, 4, 6, 5\) with C=4"):
        layer.step(torch.randn(2, 4, H, W))
    _, state = layer.step(torch.randn(2, C, H, W))
    with pytest.raises(cnnlstm.ShapeError, match=r"\(layers, N, D, H, W\) = \(2, 3, 4, 6, 5\).*got \(2, 2, 4, 6, 5\)"):
        layer.step(torch.randn(3, C, H, W), state)
    with pytest.raises(cnnlstm.ShapeError, match=r"state is \(h, c\)"):
        layer.step(torch.randn(2, C, H, W), state[0])


# ----------------------------------------------------------------------------- the export path


@pytest.mark.parametrize("lengths", [None, [4, 2, 1]])
def test_the_export_path_equals_the_eager_loop(lengths):
    """Under torch.export the clip runs as a scan over T (an ONNX Scan, T dynamic): the same numbers."""
    layer = _layer(num_layers=2)
    x = _clip(t=4)
    lens = None if lengths is None else torch.tensor(lengths)
    hop = importlib.import_module("torch._higher_order_ops.scan")

    with torch.no_grad():
        eager = layer(x, lens)
        with (
            mock.patch("torch.compiler.is_exporting", return_value=True),
            mock.patch.object(hop, "scan", wraps=hop.scan) as scan,
        ):
            scanned = layer(x, lens)
    assert scan.called
    torch.testing.assert_close(scanned, eager, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- errors and the shape doctor


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((2, 5, 3), r"a sequence of features \(N, T, F\)\. A ConvLSTM reads each frame's maps"
         r" .*do not bridge before it.*rnn='lstm' for flat features \(N, T, F=3\)"),
        ((2, 3, 6, 5), r"one step's maps \(N, C, H, W\).*x\.unsqueeze\(1\) gives \(2, 1, 3, 6, 5\).*step\(x, state\)"),
        ((2, 5, 6, 5, 3), r"channels last .*x\.permute\(0, 1, 4, 2, 3\) gives \(2, 5, 3, 6, 5\)"),
        ((2, 5, 4, 6, 5), r"C=4 channels but in_channels=3\. Build it with in_channels=4"),
        ((2, 5, 3, 6, 5, 1), r"a 6-D tensor"),
    ],
)  # fmt: skip
def test_wrong_inputs_raise_shape_error_with_the_fix(shape, match):
    with pytest.raises(cnnlstm.ShapeError, match=r"ConvLSTM wants maps \(N, T, C=3, H, W\), got \d-D .*?: " + match):
        _layer()(torch.randn(shape))


def test_bad_options_are_config_errors():
    with pytest.raises(cnnlstm.ConfigError, match="sizes must be positive"):
        ConvLSTM(3, 0)
    with pytest.raises(cnnlstm.ConfigError, match=r"kernel_size must be a positive int or \(kh, kw\)"):
        ConvLSTM(3, 4, kernel_size=0)
    with pytest.raises(cnnlstm.ConfigError, match=r"dropout must be in \[0, 1\)"):
        ConvLSTM(3, 4, dropout=1.0)


def test_the_doctor_finds_a_sequence_fed_to_a_convlstm():
    err = diagnose(ConvLSTM(64, 8), (8, 16, 64)).error
    assert err.known and err.module == "ConvLSTM"
    assert str(err).startswith("ConvLSTM wants (N, T, C=64, H, W), got (8, 16, 64): a sequence of features (N, T, F).")
    assert "do not bridge before it" in err.fix and "rnn='lstm'" in err.fix


def test_the_doctor_finds_a_bridge_before_a_convlstm_in_a_users_model():
    class BridgedFirst(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cnn = cnnlstm.TimeDistributed(torch.nn.Conv2d(3, 8, 3, padding=1))
            self.pool = bridge("gap")
            self.rnn = ConvLSTM(8, 4)

        def forward(self, x):
            return self.rnn(self.pool(self.cnn(x)))[0]

    err = diagnose(BridgedFirst(), (2, 4, 3, 16, 16)).error
    assert (err.path, err.got) == ("rnn", (2, 4, 8))
    assert "do not bridge before it" in err.fix
    good = diagnose(ConvLSTM(8, 4), (2, 4, 8, 16, 16), lengths=[4, 2])
    assert good.ok and not good.warnings  # it takes lengths: no warning that padding is treated as data
    assert good.output == ((2, 4, 4, 16, 16), ((1, 2, 4, 16, 16), (1, 2, 4, 16, 16)))
