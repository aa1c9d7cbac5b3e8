"""The builder (names and numbers into a CNNLSTM's parts, with every check) and the model presets."""

import pytest

import cnnlstm as cl
from cnnlstm.build import PRESETS, build_cnnlstm, build_parts, preset
from cnnlstm.errors import ConfigError, ShapeError


def test_presets_are_fresh_copies():
    a = preset("conv1d-bilstm")
    a["backbone_options"]["channels"] = (1,)
    assert preset("conv1d-bilstm")["backbone_options"]["channels"] == (64, 64, 64)


def test_unknown_preset_lists_the_names():
    with pytest.raises(ConfigError, match="unknown model preset 'big': expected one of video, series, conv1d-bilstm"):
        preset("big")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_a_model(name):
    series = preset(name).get("bridge") == "none"
    shuffled = preset(name).get("arrangement_options", {}).get("dimension_shuffle")  # reads T as features: T fixed
    shape = ((16 if shuffled else None), 3) if series else (4, 3, 32, 32)
    m = cl.CNNLSTM(**preset(name), input_shape=shape, layout="NTF" if series else "NTCHW", num_classes=2)
    assert cl.infer(m, (2, 16, 3) if series else (2, 4, 3, 32, 32)) == (2, 2)


# ----------------------------------------------------------------------------- the builder

SMALL = {"channels": (8, 16)}


def _parts(**kw):
    opts = {"input_shape": (4, 3, 32, 32), "hidden_size": 8, "num_classes": 5, "backbone_options": dict(SMALL)}
    return build_cnnlstm(**{**opts, **kw})


def test_build_cnnlstm_gives_the_parts_and_the_config_that_rebuilds_them():
    parts = _parts(bridge="grid", bridge_options={"k": 3}, rnn="gru")
    assert isinstance(parts.backbone, cl.TimeDistributed) and isinstance(parts.backbone.module, cl.SmallCNN)
    assert parts.feature_shape == (4, 16, 8, 8)  # the dry run's (T, C', H', W')
    assert parts.bridge.k == 3 and parts.rnn.input_size == 16 * 9 and parts.rnn.rnn.mode == "GRU"
    assert parts.head.fc.out_features == 5
    again = build_parts(parts.config)
    assert {k: v.shape for k, v in again.rnn.state_dict().items()} == {
        k: v.shape for k, v in parts.rnn.state_dict().items()
    }
    assert again.config == parts.config


@pytest.mark.parametrize(
    ("layout", "shape", "backbone", "bridge"),
    [
        ("NTCHW", (4, 3, 32, 32), "small", "gap"),
        ("NCHW", (3, 16, 16), "small", "spatial"),
        ("NTF", (None, 3), "conv1d", "none"),
    ],
)
def test_defaults_follow_the_layout(layout, shape, backbone, bridge):
    config = _parts(layout=layout, input_shape=shape).config
    assert (config.backbone, config.bridge) == (backbone, bridge)


def test_the_model_is_made_of_the_builders_parts():
    parts = _parts(bridge="attention", head="frames")
    model = cl.CNNLSTM(**{k: v for k, v in parts.config.to_dict().items()})
    assert [type(m) for m in (model.backbone, model.bridge, model.rnn, model.head)] == [
        type(p) for p in (parts.backbone, parts.bridge, parts.rnn, parts.head)
    ]
    assert model.config == parts.config and model.feature_shape == parts.feature_shape


def test_attention_gets_its_channels_from_the_dry_run():
    assert _parts(bridge="attention").bridge.channels == 16
    assert _parts(bridge="attention", backbone_options={"channels": (8, 24)}).bridge.channels == 24


def test_the_last_head_learns_whether_the_rnn_is_bidirectional():
    assert _parts(bidirectional=True).head.bidirectional is True
    assert _parts().head.bidirectional is False
    assert not hasattr(_parts(head="mean", bidirectional=True).head, "bidirectional")


def test_weights_are_loaded_not_saved_and_freeze_batchnorm(tmp_path):
    from safetensors.torch import save_file

    cnn = cl.SmallCNN(3, channels=(8, 16))
    save_file(cnn.state_dict(), str(tmp_path / "w.safetensors"))
    parts = _parts(backbone_options={**SMALL, "weights": str(tmp_path / "w.safetensors")})
    assert parts.config.bn == "frozen" and "weights" not in parts.config.backbone_options
    assert (
        _parts(bn="train", backbone_options={**SMALL, "weights": str(tmp_path / "w.safetensors")}).config.bn == "train"
    )


def test_modules_are_used_as_given_and_recorded():
    cnn, grid = cl.SmallCNN(3, channels=(8,)), cl.bridge("grid", k=3)
    parts = _parts(backbone=cnn, bridge=grid)
    assert parts.backbone.module is cnn and parts.bridge is grid
    assert (parts.config.backbone, parts.config.bridge, parts.config.bridge_options) == ("custom", "grid", {"k": 3})


@pytest.mark.parametrize("part", ["backbone", "bridge"])
def test_a_custom_part_must_be_given_again(part):
    config = _parts().config
    setattr(config, part, "custom")
    with pytest.raises(ConfigError, match=rf"custom {part} module.*pass it again.*{part}=my_{part}"):
        build_parts(config)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"input_shape": (2, 4, 3, 32, 32)}, ShapeError, "without N"),
        ({"input_shape": (4, None, 32, 32)}, ShapeError, "only T may be None"),
        ({"input_shape": (4, 3, 0, 32)}, ShapeError, "positive int"),
        ({"layout": "XYZ"}, ConfigError, "unknown layout"),
        ({"bn": "sometimes"}, ConfigError, "BatchNorm policy"),
        ({"bridge": "spatial"}, ConfigError, "bridge='gap'"),
        ({"head": "nope"}, ConfigError, "unknown head"),
        ({"backbone": "nope"}, ConfigError, "unknown backbone"),
        ({"input_shape": (4, 3, 1, 1)}, ShapeError, "cannot take input_shape"),
        (
            {"layout": "NTF", "input_shape": (None, 2), "backbone_options": {"pool": 4}, "head": "frames"},
            ConfigError,
            "pools time by 4",
        ),
    ],
)
def test_bad_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        _parts(**kwargs)
    with pytest.raises(error, match=match):  # the model's constructor is the builder's
        cl.CNNLSTM(**{"input_shape": (4, 3, 32, 32), "backbone_options": dict(SMALL), **kwargs})
