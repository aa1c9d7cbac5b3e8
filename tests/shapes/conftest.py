"""Helpers of the shape doctor's tests, reaching them as fixtures (a ``from conftest import`` would be
ambiguous: other test folders have their own ``conftest.py`` and none is a package)."""

from __future__ import annotations

import pytest
from torch import nn

import cnnlstm

collect_ignore = ["conftest.py"]  # keep --doctest-modules from importing it beside the other conftest.py files


@pytest.fixture(scope="session")
def small_model():
    """A factory of small CNNLSTMs: 8 frames of 3x32x32, hidden size 16, 5 classes; keywords override."""

    def make(**kw) -> cnnlstm.CNNLSTM:
        opts = {
            "input_shape": (8, 3, 32, 32),
            "hidden_size": 16,
            "num_classes": 5,
            "backbone_options": {"channels": (8, 16)},
        }
        opts.update(kw)
        return cnnlstm.CNNLSTM(**opts)

    return make


@pytest.fixture(scope="session")
def no_hooks():
    """Whether no forward hook is left on any submodule of a module."""

    def check(module: nn.Module) -> bool:
        return all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())

    return check
