"""Model presets: one table, fresh copies, unknown names listed."""

import pytest

import cnnlstm as cl
from cnnlstm.build import PRESETS, preset
from cnnlstm.errors import ConfigError


def test_presets_are_fresh_copies():
    a = preset("series")
    a["backbone_options"]["channels"] = (1,)
    assert preset("series")["backbone_options"]["channels"] == (64, 64, 64)


def test_unknown_preset_lists_the_names():
    with pytest.raises(ConfigError, match="unknown model preset 'big': expected one of video, demo, series"):
        preset("big")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_a_model(name):
    series = preset(name).get("backbone") == "conv1d"
    shape = (None, 3) if series else (4, 3, 32, 32)
    m = cl.CNNLSTM(**preset(name), input_shape=shape, layout="NTF" if series else "NTCHW", num_classes=2)
    assert cl.infer(m, (2, 16, 3) if series else (2, 4, 3, 32, 32)) == (2, 2)
