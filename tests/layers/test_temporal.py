"""Temporal (LSTM/GRU with lengths) and the heads: shapes, padding parity, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnlstm
from cnnlstm import HEADS, Head, Temporal, head

CONFIGS = [
    pytest.param(rnn, layers, bidir, id=f"{rnn}-{layers}layer-{'bi' if bidir else 'uni'}")
    for rnn in ("lstm", "gru")
    for layers in (1, 2)
    for bidir in (False, True)
]
LENGTHS = [5, 3, 1]  # a full sequence, a padded one, a single step
F_IN, HIDDEN, T = 4, 6, 5


def _temporal(rnn: str, layers: int, bidir: bool, seed: int = 0) -> Temporal:
    torch.manual_seed(seed)
    return Temporal(F_IN, HIDDEN, rnn=rnn, num_layers=layers, bidirectional=bidir).eval()


def _clip(seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(len(LENGTHS), T, F_IN)  # (N, T, F)


def _last_hidden(state, rnn: str) -> torch.Tensor:
    """The final hidden state ``h_n`` (layers*dirs, N, D) from an LSTM's ``(h, c)`` or a GRU's ``h``."""
    return state[0] if rnn == "lstm" else state


# ----------------------------------------------------------------------------- Temporal


@pytest.mark.parametrize(("rnn", "layers", "bidir"), CONFIGS)
def test_output_shapes(rnn, layers, bidir):
    tm = _temporal(rnn, layers, bidir)
    dirs = 2 if bidir else 1
    out, state = tm(_clip())
    assert out.shape == (3, T, HIDDEN * dirs)
    assert tm.out_features == HIDDEN * dirs
    assert tm.input_size == F_IN
    assert _last_hidden(state, rnn).shape == (layers * dirs, 3, HIDDEN)


@pytest.mark.parametrize(("rnn", "layers", "bidir"), CONFIGS)
def test_lengths_equal_each_sequence_run_alone(rnn, layers, bidir):
    tm = _temporal(rnn, layers, bidir)
    x = _clip()
    out, state = tm(x, torch.tensor(LENGTHS))
    h_n = _last_hidden(state, rnn)
    for i, n in enumerate(LENGTHS):
        alone, alone_state = tm(x[i : i + 1, :n])
        torch.testing.assert_close(out[i, :n], alone[0], atol=1e-5, rtol=0)
        assert torch.count_nonzero(out[i, n:]) == 0
        torch.testing.assert_close(h_n[:, i], _last_hidden(alone_state, rnn)[:, 0], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("rnn", "layers", "bidir"), CONFIGS[:4:3])
def test_padding_content_does_not_matter(rnn, layers, bidir):
    tm = _temporal(rnn, layers, bidir)
    x = _clip()
    garbage = x.clone()
    for i, n in enumerate(LENGTHS):
        garbage[i, n:] = 1e3
    lengths = torch.tensor(LENGTHS)
    torch.testing.assert_close(tm(garbage, lengths)[0], tm(x, lengths)[0], atol=0, rtol=0)


def test_full_lengths_equal_no_lengths_and_lists_are_accepted():
    tm = _temporal("lstm", 1, True)
    x = _clip()
    torch.testing.assert_close(tm(x, [T, T, T])[0], tm(x)[0])
    torch.testing.assert_close(tm(x, LENGTHS)[0], tm(x, torch.tensor(LENGTHS))[0])


def test_inputs_are_not_mutated():
    tm = _temporal("gru", 1, False)
    x, lengths = _clip(), torch.tensor(LENGTHS)
    x0, l0 = x.clone(), lengths.clone()
    tm(x, lengths)
    assert torch.equal(x, x0) and torch.equal(lengths, l0)


def test_gradients_reach_the_rnn_through_packing():
    tm = _temporal("lstm", 2, True).train()
    x = _clip().requires_grad_()
    out, _ = tm(x, torch.tensor(LENGTHS))
    out.pow(2).sum().backward()
    for name, p in tm.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
    assert torch.count_nonzero(x.grad[2, 1:]) == 0  # padded steps get no gradient
    assert torch.count_nonzero(x.grad[2, :1]) > 0


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 3),
    t=st.integers(1, 5),
    f=st.integers(1, 6),
    hidden=st.integers(1, 5),
    rnn=st.sampled_from(["lstm", "gru"]),
    bidir=st.booleans(),
    data=st.data(),
)
def test_output_shape_property(n, t, f, hidden, rnn, bidir, data):
    torch.manual_seed(0)
    tm = Temporal(f, hidden, rnn=rnn, bidirectional=bidir)
    x = torch.randn(n, t, f)
    out, _ = tm(x)
    assert out.shape == (n, t, hidden * (2 if bidir else 1))
    lengths = data.draw(st.lists(st.integers(1, t), min_size=n, max_size=n), label="lengths")
    out, _ = tm(x, torch.tensor(lengths))
    assert out.shape == (n, t, tm.out_features)
    for i, k in enumerate(lengths):
        assert torch.count_nonzero(out[i, k:]) == 0


# ----------------------------------------------------------------------------- Temporal errors


@pytest.mark.parametrize(
    ("shape", "extra"),
    [
        ((2, 100), r"got 2-D \(2, 100\).*unsqueeze"),
        ((2, 3, 4, 100), r"got 4-D \(2, 3, 4, 100\)"),
        ((2, 3, 4, 5, 100), r"got 5-D \(2, 3, 4, 5, 100\).*bridge"),
    ],
    ids=["2-D", "4-D", "5-D"],
)
def test_wrong_rank_is_a_shape_error(shape, extra):
    tm = Temporal(100, 8)
    with pytest.raises(cnnlstm.ShapeError, match=r"LSTM wants \(N, T, F=100\) with batch_first=True, " + extra):
        tm(torch.zeros(shape))


def test_clip_of_feature_maps_names_the_bridge_sizes():
    with pytest.raises(cnnlstm.ShapeError) as info:
        Temporal(512, 8)(torch.zeros(8, 16, 64, 7, 7))
    assert "F=64" in str(info.value)
    assert "F=3136" in str(info.value)


def test_clip_of_feature_maps_says_what_the_shape_doctor_says():
    fix = cnnlstm.diagnose(torch.nn.LSTM(512, 8, batch_first=True), (8, 16, 64, 7, 7)).error.fix
    assert fix == (
        'Put a bridge in front: bridge="gap" gives F=64, bridge="grid" gives F=256, bridge="flatten" gives F=3136, '
        'bridge="attention" gives F=64.'
    )
    with pytest.raises(cnnlstm.ShapeError) as info:
        Temporal(512, 8)(torch.zeros(8, 16, 64, 7, 7))
    assert str(info.value).endswith(f"a clip of feature maps. {fix}")


def test_layers_declare_what_the_shape_doctor_reads():
    assert Temporal.takes_lengths is True  # it packs padded steps: no warning that its RNN runs over them
    assert {name: HEADS.get(name).takes_lengths for name in HEADS} == dict.fromkeys(HEADS, True)
    assert {name: HEADS.get(name).per_step for name in HEADS} == {
        "last": False,
        "mean": False,
        "attention": False,
        "frames": True,  # one output per step on purpose: no warning about a Linear on every step
        "forecast": False,
    }


def test_image_feature_maps_name_the_spatial_bridge():
    with pytest.raises(cnnlstm.ShapeError, match=r"spatial.*\(2, 49, 64\)"):
        Temporal(64, 8)(torch.zeros(2, 64, 7, 7))


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_wrong_features_name_the_fix(rnn):
    tm = Temporal(100, 8, rnn=rnn)
    with pytest.raises(
        cnnlstm.ShapeError, match=rf"{rnn.upper()} wants \(N, T, F=100\), got \(2, 3, 7\).*input_size=7"
    ) as info:
        tm(torch.zeros(2, 3, 7))
    assert not isinstance(info.value, RuntimeError)


@pytest.mark.parametrize(
    ("lengths", "match"),
    [
        (torch.tensor([0, 3]), r"LSTM: every length must be in 1\.\.T=5 .*min 0"),
        (torch.tensor([6, 3]), r"LSTM: every length must be in 1\.\.T=5 .*max 6"),
        (torch.tensor([5]), r"LSTM: lengths must be \(N,\) = \(2,\).*got \(1,\)"),
        (torch.tensor([[5, 3]]), r"LSTM: lengths must be \(N,\) = \(2,\).*got \(1, 2\)"),
        (torch.tensor([5.0, 3.0]), r"LSTM: lengths must be integers, got dtype torch\.float32"),
        (torch.tensor([True, True]), r"LSTM: lengths must be integers, got dtype torch\.bool"),
    ],
    ids=["zero", "too-long", "too-few", "2-D", "float", "bool"],
)
def test_bad_lengths_are_shape_errors(lengths, match):
    with pytest.raises(cnnlstm.ShapeError, match=match):
        Temporal(4, 6)(torch.zeros(2, 5, 4), lengths)


def test_bad_rnn_options_are_config_errors():
    with pytest.raises(cnnlstm.ConfigError, match="unknown rnn 'rnn': expected one of lstm, gru"):
        Temporal(4, 6, rnn="rnn")
    with pytest.raises(cnnlstm.ConfigError, match="hidden_size=0"):
        Temporal(4, 0)


# ----------------------------------------------------------------------------- heads


HEAD_NAMES = HEADS.names()


def test_registry_holds_the_documented_heads():
    assert {"last", "mean", "attention", "frames"} <= set(HEAD_NAMES)


@pytest.mark.parametrize("name", HEAD_NAMES)
@pytest.mark.parametrize("bidir", [False, True], ids=["uni", "bi"])
def test_every_head_shape_and_gradients(name, bidir):
    tm = _temporal("lstm", 1, bidir).train()
    h = head(name, tm, 7)  # the head learns what it needs of the RNN (last: bidirectional or not)
    assert isinstance(h, Head)
    lengths = torch.tensor(LENGTHS)
    states, _ = tm(_clip(), lengths)
    logits = h(states, lengths)
    expected = {"frames": (3, T, 7), "forecast": (3, 1, 7)}.get(name, (3, 7))  # forecast: (N, horizon, targets)
    assert logits.shape == expected
    assert torch.isfinite(logits).all()
    logits.pow(2).sum().backward()
    for pname, p in [*tm.named_parameters(), *h.named_parameters()]:
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, pname


def test_forecast_head_shape_and_last_valid_step():
    tm = _temporal("lstm", 1, False).eval()
    h = head("forecast", tm.out_features, 2, horizon=4).eval()
    lengths = torch.tensor(LENGTHS)
    states, _ = tm(_clip(), lengths)
    out = h(states, lengths)
    assert out.shape == (3, 4, 2)
    last = states[torch.arange(3), lengths - 1]  # (N, D): each series' last valid state
    torch.testing.assert_close(out, h.fc(last).view(3, 4, 2))
    with pytest.raises(cnnlstm.ConfigError, match="horizon >= 1"):
        head("forecast", 8, 2, horizon=0)


@pytest.mark.parametrize(("rnn", "layers", "bidir"), CONFIGS)
def test_last_head_takes_the_last_valid_step(rnn, layers, bidir):
    tm = _temporal(rnn, layers, bidir)
    d = tm.out_features
    h = head("last", d, 3, bidirectional=bidir).eval()
    x, lengths = _clip(), torch.tensor(LENGTHS)
    states, state = tm(x, lengths)
    pooled = h.pool(states, lengths)  # (N, D*dirs)
    h_n = _last_hidden(state, rnn)
    for i, n in enumerate(LENGTHS):
        if bidir:
            expected = torch.cat([states[i, n - 1, : d // 2], states[i, 0, d // 2 :]])
            final = torch.cat([h_n[-2, i], h_n[-1, i]])  # last layer: forward, then backward final state
        else:
            expected = states[i, n - 1]
            final = h_n[-1, i]
        torch.testing.assert_close(pooled[i], expected, atol=0, rtol=0)
        torch.testing.assert_close(pooled[i], final, atol=1e-5, rtol=0)
    logits = h(states, lengths)
    torch.testing.assert_close(logits, h.fc(pooled), atol=1e-6, rtol=0)
    for i, n in enumerate(LENGTHS):
        alone, _ = tm(x[i : i + 1, :n])
        torch.testing.assert_close(logits[i], h(alone)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["last", "mean", "attention"])
@pytest.mark.parametrize(("rnn", "layers", "bidir"), [CONFIGS[0], CONFIGS[3], CONFIGS[5], CONFIGS[6]])
def test_pooling_heads_with_lengths_equal_the_unpadded_sequence(name, rnn, layers, bidir):
    tm = _temporal(rnn, layers, bidir)
    torch.manual_seed(2)
    h = head(name, tm, 3).eval()
    x, lengths = _clip(), torch.tensor(LENGTHS)
    states, _ = tm(x, lengths)
    logits = h(states, lengths)
    for i, n in enumerate(LENGTHS):
        alone, _ = tm(x[i : i + 1, :n])
        torch.testing.assert_close(logits[i], h(alone)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_a_head_takes_bidirectional_only_if_it_uses_it(name):
    import inspect

    from cnnlstm.layers.temporal import LastStep

    cls = HEADS.get(name)
    uses = issubclass(cls, LastStep)  # joins the two directions' last steps
    assert ("bidirectional" in inspect.signature(cls).parameters) == uses
    for bidir in (False, True):
        h = head(name, _temporal("gru", 1, bidir), 3)
        assert h.in_features == HIDDEN * (2 if bidir else 1)
        assert getattr(h, "bidirectional", None) == (bidir if uses else None)
    if not uses:
        with pytest.raises(cnnlstm.ConfigError, match=f"head '{name}' does not take these options"):
            head(name, 6, 3, bidirectional=True)


@pytest.mark.parametrize("name", ["mean", "attention"])
def test_pooling_heads_ignore_padded_states(name):
    torch.manual_seed(3)
    h = head(name, 6, 3).eval()
    states = torch.randn(3, T, 6)
    garbage = states.clone()
    for i, n in enumerate(LENGTHS):
        garbage[i, n:] = 1e4
    lengths = torch.tensor(LENGTHS)
    torch.testing.assert_close(h(garbage, lengths), h(states, lengths), atol=1e-6, rtol=0)
    for i, n in enumerate(LENGTHS):
        torch.testing.assert_close(h(states, lengths)[i], h(states[i : i + 1, :n])[0], atol=1e-6, rtol=0)


def test_attention_head_weights_are_zero_on_padding_and_sum_to_one():
    torch.manual_seed(4)
    h = head("attention", 6, 3)
    w = h.weights(torch.randn(3, T, 6), torch.tensor(LENGTHS))
    assert w.shape == (3, T)
    torch.testing.assert_close(w.sum(1), torch.ones(3), atol=1e-6, rtol=0)
    for i, n in enumerate(LENGTHS):
        assert torch.count_nonzero(w[i, n:]) == 0
        assert (w[i, :n] > 0).all()


def test_mean_head_divides_by_the_valid_steps():
    h = head("mean", 2, 1)
    states = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])  # (1, 3, 2)
    torch.testing.assert_close(h.pool(states, torch.tensor([2])), torch.tensor([[2.0, 3.0]]))
    torch.testing.assert_close(h.pool(states, None), torch.tensor([[3.0, 4.0]]))


def test_frames_head_gives_one_output_per_step_and_zeros_on_padding():
    torch.manual_seed(5)
    h = head("frames", 6, 4)
    with torch.no_grad():
        h.fc.bias.fill_(1.0)  # padded steps would not be zero by accident
    states = torch.randn(3, T, 6)
    out = h(states, torch.tensor(LENGTHS))
    assert out.shape == (3, T, 4)
    assert h.per_step
    for i, n in enumerate(LENGTHS):
        torch.testing.assert_close(out[i, :n], h.fc(states[i, :n]), atol=1e-6, rtol=0)
        assert torch.count_nonzero(out[i, n:]) == 0
    torch.testing.assert_close(h(states), h.fc(states))


@pytest.mark.parametrize("name", HEAD_NAMES)
@pytest.mark.parametrize("shape", [(3, 6), (3, 5, 7), (3, 5, 6, 1)], ids=["2-D", "wrong-D", "4-D"])
def test_heads_reject_wrong_shapes(name, shape):
    with pytest.raises(cnnlstm.ShapeError, match=r"wants RNN states \(N, T, D=6\)"):
        head(name, 6, 3)(torch.zeros(shape))


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_heads_reject_bad_lengths(name):
    h = head(name, 6, 3)
    with pytest.raises(cnnlstm.ShapeError, match=r"every length must be in 1\.\.T=5"):
        h(torch.zeros(2, 5, 6), torch.tensor([6, 1]))
    with pytest.raises(cnnlstm.ShapeError, match="lengths must be integers"):
        h(torch.zeros(2, 5, 6), torch.tensor([5.0, 1.0]))


def test_head_config_errors():
    with pytest.raises(cnnlstm.ConfigError, match="unknown head 'max'") as info:
        head("max", 6, 3)
    for name in HEAD_NAMES:
        assert name in str(info.value)
    with pytest.raises(cnnlstm.ConfigError, match="num_classes must be at least 1"):
        head("last", 6, 0)
    with pytest.raises(cnnlstm.ConfigError, match=r"head 'mean' does not take these options \['k'\]"):
        head("mean", 6, 3, k=2)


def test_registering_a_duplicate_head_is_an_error():
    original = HEADS.get("last")

    class Other(Head):
        pass

    with pytest.raises(cnnlstm.ConfigError, match="'last' is registered already"):
        cnnlstm.register_head("last")(Other)
    assert HEADS.get("last") is original
