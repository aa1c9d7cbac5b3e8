"""Series models with the field's CNNs, after the LSTM (sequential) or beside it (parallel: LSTM-FCN, MLSTM-FCN):
shapes over random lengths and channels, padded steps that change nothing, config round trip, presets and options,
the refusals (streaming, dimension shuffle without a fixed T) pinned by their messages, and ONNX export."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import cnnlstm as cl
from cnnlstm import CNNLSTM, CNNLSTMConfig, ConfigError, ShapeError
from cnnlstm.build import PRESETS, ModelOptions, model_kwargs, preset
from cnnlstm.layers.parallel import ParallelHead

pytestmark = pytest.mark.usefixtures("one_thread")
SETTINGS = settings(max_examples=10, deadline=None)

BACKBONES = {  # tiny versions of each series CNN
    "conv1d": {"channels": (4, 4), "kernel_size": 3, "pool": 2},
    "fcn": {"channels": (4, 8, 4), "se": True, "se_reduction": 2},
    "resnet1d": {"channels": (4, 6)},
    "inception1d": {"depth": 3, "filters": 2, "bottleneck": 2, "kernel_sizes": (9, 5, 3)},
}
# (backbone, arrangement, options): every backbone after the LSTM and beside it, and the dimension shuffle
ARCHS = [
    *[(b, "sequential", {}) for b in BACKBONES],
    *[(b, "parallel", {}) for b in BACKBONES],
    ("fcn", "parallel", {"dimension_shuffle": True}),
    ("inception1d", "parallel", {"dimension_shuffle": True, "dropout": 0.5}),
]
IDS = [f"{b}-{a}{'-shuffle' if o else ''}" for b, a, o in ARCHS]


def _randomize_batchnorm(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(1 + torch.randn(m.weight.shape, generator=g) * 0.3)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
    return model.eval()


def _model(backbone: str, arrangement: str, options: dict, features: int = 3, steps: int | None = None, **kw):
    torch.manual_seed(0)
    t = steps if options.get("dimension_shuffle") else None
    m = CNNLSTM(
        backbone, layout="NTF", input_shape=(t, features), hidden_size=6, num_classes=3,
        backbone_options=BACKBONES[backbone], arrangement=arrangement, arrangement_options=options,
        **{"head": "mean" if arrangement == "sequential" else "last", **kw},
    )  # fmt: skip
    return _randomize_batchnorm(m)


@pytest.mark.parametrize(("backbone", "arrangement", "options"), ARCHS, ids=IDS)
@SETTINGS
@given(data=st.data(), n=st.integers(1, 3), t=st.integers(2, 10), f=st.integers(1, 3))
def test_output_shapes_over_random_lengths_and_channels(backbone, arrangement, options, data, n, t, f):
    m = _model(backbone, arrangement, options, features=f, steps=t)
    lengths = torch.tensor(data.draw(st.lists(st.integers(1, t), min_size=n, max_size=n)))
    with torch.no_grad():
        y = m(torch.randn(n, t, f), lengths)
    assert y.shape == (n, 3) and torch.isfinite(y).all()
    assert cl.infer(m, (n, t, f)) == (n, 3)


@pytest.mark.parametrize(("backbone", "arrangement", "options"), ARCHS, ids=IDS)
def test_padded_steps_never_change_the_output(backbone, arrangement, options):
    """Padding holds NaN: each series gives what it gives alone (a shuffled model reads T=12 steps always, so alone
    means zero-padded to 12), and the batch's gradients stay finite."""
    m = _model(backbone, arrangement, options, steps=12)
    lengths = [5, 12, 8]
    x = torch.randn(3, 12, 3)
    garbage = x.clone()
    for i, n in enumerate(lengths):
        garbage[i, n:] = float("nan")
    with torch.no_grad():
        batched = m(garbage, torch.tensor(lengths))
        for i, n in enumerate(lengths):
            if options.get("dimension_shuffle"):
                alone = m(torch.cat([x[i : i + 1, :n], torch.zeros(1, 12 - n, 3)], 1), torch.tensor([n]))
            else:
                alone = m(x[i : i + 1, :n])
            torch.testing.assert_close(batched[i], alone[0], atol=1e-5, rtol=1e-4)
    m.train()
    garbage.requires_grad_()
    m(garbage, torch.tensor(lengths)).sum().backward()
    assert torch.isfinite(garbage.grad).all() and (garbage.grad[0, 5:] == 0).all()


@pytest.mark.parametrize(("backbone", "arrangement", "options"), ARCHS, ids=IDS)
def test_config_round_trip_rebuilds_the_same_model(backbone, arrangement, options, tmp_path):
    m = _model(backbone, arrangement, options, steps=9)
    m.save_pretrained(tmp_path)
    again = CNNLSTM.from_pretrained(tmp_path).eval()
    assert again.config.to_json() == m.config.to_json()
    assert json.loads((tmp_path / "config.json").read_text())["arrangement"] == arrangement
    x = torch.randn(2, 9, 3)
    with torch.no_grad():
        torch.testing.assert_close(again(x, torch.tensor([4, 9])), m(x, torch.tensor([4, 9])))
    assert [type(p).__name__ for p in again.modules()] == [type(p).__name__ for p in m.modules()]


def test_a_config_from_before_the_arrangement_loads_sequential():
    d = CNNLSTM(layout="NTF", input_shape=(None, 2), hidden_size=4).config.to_dict()
    del d["arrangement"], d["arrangement_options"]
    m = CNNLSTM.from_config(CNNLSTMConfig.from_dict(d))
    assert m.config.arrangement == "sequential" and not m.parallel and type(m.head).__name__ == "LastStep"


def test_the_parallel_parts():
    m = _model("fcn", "parallel", {}, features=4)
    assert isinstance(m.head, ParallelHead) and m.rnn.input_size == 4  # the LSTM reads the raw series
    assert m.head.in_features == 4 + 6 and m.head.arm_dropout.p == 0.8  # FCN's C beside the LSTM's D; LSTM-FCN's
    shuffled = _model("fcn", "parallel", {"dimension_shuffle": True}, features=4, steps=11)
    assert shuffled.rnn.input_size == 11 and shuffled.fixed_steps == 11  # F steps of T features
    assert m.fixed_steps is None
    mean = _model("resnet1d", "parallel", {}, head="mean", bidirectional=True)
    assert mean.head.rnn_pool == "mean" and mean.head.rnn_features == 12


def test_the_rnn_arm_is_in_the_output():
    """Both arms count: changing the LSTM's weights or the conv arm's changes the logits."""
    m = _model("fcn", "parallel", {})
    x = torch.randn(2, 7, 3)
    with torch.no_grad():
        y = m(x)
        m.rnn.rnn.weight_ih_l0.add_(1.0)
        y2 = m(x)
        m.backbone.blocks[-1].bn.bias.add_(1.0)
        y3 = m(x)
    assert not torch.allclose(y, y2) and not torch.allclose(y2, y3)


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"arrangement": "side"}, ConfigError, "unknown arrangement 'side': expected one of sequential, parallel"),
        ({"arrangement_options": {"dropout": 0.8}}, ConfigError, r"arrangement_options \['dropout'\] are the parallel"),
        ({"arrangement": "parallel", "arrangement_options": {"shuffle": True}}, ConfigError,
         r"unknown arrangement_options \['shuffle'\]: the parallel arrangement takes \['dimension_shuffle', "),
        ({"arrangement": "parallel", "arrangement_options": {"dropout": 1.0}}, ConfigError,
         r"the RNN arm's dropout must be in \[0, 1\), got 1.0"),
        ({"arrangement": "parallel", "head": "attention"}, ConfigError,
         "head='attention' cannot summarise the parallel arrangement's RNN arm: expected one of last, mean"),
        ({"arrangement": "parallel", "head_options": {"horizon": 2}}, ConfigError, "head_options 'dropout' only"),
        ({"arrangement": "parallel", "arrangement_options": {"dimension_shuffle": True}}, ConfigError,
         r"so T is the RNN's input size and must be fixed, but input_shape \(None, 3\) leaves T open"),
        ({"arrangement": "parallel", "layout": "NTCHW", "input_shape": (4, 3, 16, 16), "backbone": "small"},
         ConfigError, "arrangement='parallel' .LSTM-FCN. runs an RNN over the raw input beside the CNN, which is for "
         "series .layout NTF or NFT.; a clip model's raw input is pixels"),
    ],
)  # fmt: skip
def test_refusals_say_what_to_do(kw, error, match):
    opts = {"backbone": "fcn", "layout": "NTF", "input_shape": (None, 3), "hidden_size": 4, **kw}
    with pytest.raises(error, match=match):
        CNNLSTM(**opts)


def test_a_shuffled_model_takes_its_own_length_only():
    m = _model("fcn", "parallel", {"dimension_shuffle": True}, steps=10)
    wants = r"reads each series as F=3 steps of T=10 features, so every batch has T=10 steps, got \(2, 7, 3\) "
    with pytest.raises(ShapeError, match=wants + r"with T=7: pad .with lengths. or crop"):
        m(torch.randn(2, 7, 3))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"arrangement": "parallel", "backbone": "conv1d", "backbone_options": {"causal": True}, "head": "last"},
         r"arrangement='parallel' .LSTM-FCN. cannot stream: its CNN arm averages over the whole series"),
        ({"arrangement": "parallel", "arrangement_options": {"dimension_shuffle": True}, "input_shape": (8, 3)},
         "and its RNN arm reads each series' time steps as features .dimension_shuffle."),
        ({"backbone": "fcn"}, r"this series model's fcn backbone looks at future steps: only a causal conv1d streams: "
         r"build it with backbone='conv1d', backbone_options=\{'causal': True\}"),
        ({"backbone": "inception1d"}, "inception1d backbone looks at future steps"),
        ({"backbone": "conv1d"}, r"conv1d backbone looks at future steps: build it with backbone_options=\{'causal'"),
    ],
)  # fmt: skip
def test_streaming_refusals(kw, match):
    m = CNNLSTM(**{"backbone": "fcn", "layout": "NTF", "input_shape": (None, 3), "hidden_size": 4, **kw})
    with pytest.raises(ConfigError, match=match):
        m.stream()


@pytest.mark.parametrize("name", ["fcn", "resnet", "inception", "lstm-fcn", "mlstm-fcn"])
def test_presets(name):
    kw = preset(name)
    shuffled = kw.get("arrangement_options", {}).get("dimension_shuffle", False)
    m = CNNLSTM(**kw, layout="NTF", input_shape=(24 if shuffled else None, 2), num_classes=3)
    assert cl.infer(m, (2, 24, 2)) == (2, 3)
    assert m.parallel == name.endswith("lstm-fcn") and shuffled == name.endswith("lstm-fcn")
    assert (len(getattr(m.backbone, "se", ())) == 2) == (name == "mlstm-fcn")
    # the series default (chosen on six sets) is LSTM-FCN reading T steps of F: any length, no fixed T
    series = preset("series")
    assert series["arrangement"] == "parallel" and not series["arrangement_options"]["dimension_shuffle"]


def test_model_options_reach_the_model():
    kw = model_kwargs("lstm-fcn", ModelOptions(dimension_shuffle=False, arm_dropout=0.3, se=True))
    assert kw["arrangement_options"] == {"dimension_shuffle": False, "dropout": 0.3}
    assert kw["backbone_options"] == {"se": True}
    kw = model_kwargs("conv1d-bilstm", ModelOptions(backbone="fcn", arrangement="parallel"))
    assert kw["arrangement"] == "parallel" and kw["arrangement_options"] == {}  # the conv1d preset has none
    assert kw["backbone_options"] == {}  # the preset's are conv1d's (dilated, pool): not the FCN's
    assert preset("conv1d-bilstm", **kw)["backbone_options"] == {}  # as the training entry merges them
    kw = model_kwargs("series", ModelOptions(arrangement="sequential"))  # the default's FCN, the LSTM after it
    assert kw["arrangement"] == "sequential" and kw["arrangement_options"] == {} and kw["backbone"] == "fcn"
    kw = model_kwargs("series", ModelOptions(causal=True))  # a streaming series model is the conv1d one's
    assert kw["backbone"] == "conv1d" and kw["backbone_options"]["causal"] and kw["head"] == "last"
    kw = model_kwargs("series", ModelOptions(backbone="resnet1d", backbone_channels=(8, 8)))
    assert kw["backbone_options"] == {"channels": (8, 8)}
    assert model_kwargs("conv1d-bilstm", ModelOptions(kernel_size=3))["backbone_options"]["dilated"]  # kept
    kw = model_kwargs("mlstm-fcn", ModelOptions(arrangement="sequential"))
    assert kw["arrangement_options"] == {} and kw["backbone_options"] == {"se": True}
    m = CNNLSTM(**model_kwargs("fcn", ModelOptions(arrangement="parallel", head="last", bidirectional=False)),
                layout="NTF", input_shape=(None, 2), num_classes=2)  # fmt: skip
    assert m.parallel and m.head.arm_dropout.p == 0.8


def test_explain_and_diagnose_walk_both_arms():
    m = _model("fcn", "parallel", {"dimension_shuffle": True}, steps=10)
    table = cl.explain(m, (2, 10, 3))
    assert table.ok and table.output == (2, 3)
    paths = {r.path: r for r in table.rows}
    assert paths["rnn"].input == (2, 3, 10) and paths["head.fc"].input == (2, 4 + 6)  # F steps of T; C + D
    d = cl.diagnose(m, (2, 10, 3), lengths=[4, 10])
    assert d.ok and not d.warnings, d


@pytest.mark.parametrize(
    ("backbone", "arrangement", "options"),
    [
        ("fcn", "parallel", {}),
        ("resnet1d", "sequential", {}),
        ("inception1d", "sequential", {}),
        ("inception1d", "parallel", {"dimension_shuffle": True}),
    ],
    ids=["fcn-parallel", "resnet1d-sequential", "inception1d-sequential", "inception1d-parallel-shuffle"],
)
def test_onnx_export_is_verified(backbone, arrangement, options, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from cnnlstm import export as ex

    m = _model(backbone, arrangement, options, steps=8)
    report = ex.export_onnx(m, tmp_path / "m.onnx", kind="clip")
    assert report.max_abs_diff <= 1e-4
    lengths = {c["input"] for c in report.checks}
    if options.get("dimension_shuffle"):  # T is the RNN arm's input size: the graph takes T=8 only
        assert lengths == {"clip (1, 8, 3)", "clip (7, 8, 3)"}
    else:  # T dynamic: verified at 4, 8 and 15 steps
        assert len(lengths) == 6


@pytest.mark.parametrize("name", ["fcn", "resnet", "inception", "lstm-fcn"])
def test_a_preset_given_on_the_series_entry_keeps_its_own_backbone_options(name):
    # the training entry merges model_kwargs' output into the series preset: conv1d's options must not follow
    kw = preset("series", **model_kwargs("series", ModelOptions(preset=name)))
    assert kw["backbone"] == PRESETS[name]["backbone"]
    assert kw["backbone_options"] == PRESETS[name].get("backbone_options", {})
    assert "backbone_options" not in preset("series", backbone="fcn")  # given directly, as fit_series' callers may
