"""What a user coming from Keras or numpy is told when a first call goes wrong: one message with the fix."""

import numpy as np
import pytest
import torch
from torch import nn

import cnnlstm as cl
from cnnlstm.errors import ShapeError


def test_a_keras_style_channels_last_input_shape_suggests_the_layout():
    with pytest.raises(ShapeError, match=r"looks channels-last \(T, H, W, C\), as Keras writes it: build the model "
                                         r"with layout='NTHWC'.*or give input_shape=\(10, 3, 64, 64\)"):  # fmt: skip
        cl.CNNLSTM(input_shape=(10, 64, 64, 3))
    m = cl.CNNLSTM(input_shape=(10, 64, 64, 3), layout="NTHWC", hidden_size=8, backbone_options={"channels": (4,)})
    assert m(torch.zeros(1, 10, 64, 64, 3)).shape == (1, 10)


def _model() -> cl.CNNLSTM:
    return cl.CNNLSTM(input_shape=(4, 3, 16, 16), hidden_size=8, num_classes=2, backbone_options={"channels": (4,)})


def test_a_numpy_array_is_a_type_error_that_says_how_to_convert_it():
    with pytest.raises(TypeError, match=r"got ndarray: convert it with torch.from_numpy\(x\).float\(\)"):
        _model()(np.zeros((1, 4, 3, 16, 16), np.float32))


def test_uint8_frames_are_a_shape_error_that_says_to_scale_them():
    with pytest.raises(ShapeError, match=r"wants a float tensor, got torch.uint8 .*x.float\(\) / 255"):
        _model()(torch.zeros(1, 4, 3, 16, 16, dtype=torch.uint8))


def test_time_distributed_given_a_batch_of_images_says_it_wants_a_clip():
    td = cl.TimeDistributed(nn.Conv2d(3, 8, 3))
    with pytest.raises(ShapeError, match=r"expected a clip \(N, T, C, H, W\), got 4-D \(2, 3, 32, 32\).*x.unsqueeze"):
        td(torch.zeros(2, 3, 32, 32))
    assert td(torch.zeros(2, 5, 3, 32, 32)).shape == (2, 5, 8, 30, 30)


def test_diagnose_in_a_repl_reads_as_text():
    d = cl.diagnose(_model(), (2, 4, 3, 16, 16))
    assert repr(d) == str(d) == "ok: output (2, 2)"
