"""infer(): output shapes by a dry run on meta, unknown sizes carried through as None."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnlstm
from cnnlstm import ShapeError, infer


def test_infer_huge_input_on_default_model():
    assert infer(cnnlstm.CNNLSTM(), (1024, 64, 3, 1024, 1024)) == torch.Size([1024, 10])


def test_infer_conv2d_doc_example():
    assert infer(nn.Conv2d(3, 8, 3, stride=2), (1024, 3, 1024, 1024)) == torch.Size([1024, 8, 511, 511])


def test_infer_lstm_gives_nested_tuple():
    out, (h, c) = infer(nn.LSTM(10, 16, batch_first=True, num_layers=2), (4, 7, 10))
    assert out == torch.Size([4, 7, 16])
    assert h == torch.Size([2, 4, 16])
    assert c == torch.Size([2, 4, 16])


def test_infer_none_time_flows_to_output(small_model):
    model = small_model(input_shape=(None, 3, 32, 32), head="frames")
    assert tuple(infer(model, (2, None, 3, 32, 32))) == (2, None, 5)
    # the clip head pools time away: no None left
    assert infer(small_model(input_shape=(None, 3, 32, 32)), (2, None, 3, 32, 32)) == torch.Size([2, 5])
    td = cnnlstm.TimeDistributed(cnnlstm.SmallCNN(3, channels=(8, 16)))
    assert tuple(infer(td, (2, None, 3, 32, 32))) == (2, None, 16, 8, 8)
    out, (h, _c) = infer(nn.LSTM(10, 16, batch_first=True), (4, None, 10))
    assert tuple(out) == (4, None, 16)
    assert h == torch.Size([1, 4, 16])


def test_infer_none_time_flows_into_dict_outputs():
    class Dict(nn.Module):
        def forward(self, x):
            return {"steps": x * 2, "pooled": x.sum(1)}

    out = infer(Dict(), (2, None, 4))
    assert tuple(out["steps"]) == (2, None, 4)
    assert tuple(out["pooled"]) == (2, 4)


def test_infer_leaves_the_module_untouched(small_model, no_hooks):
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    infer(model, (2, 8, 3, 32, 32))
    assert no_hooks(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("bad", [(2, 0, 3, 32, 32), (2, -1, 3, 32, 32), (2, 8.0, 3, 32, 32), 5, "abc"])
def test_infer_bad_input_shape_raises_shape_error(bad, small_model):
    with pytest.raises(ShapeError, match="infer"):
        infer(small_model(), bad)


def test_infer_wrong_channels_raises_diagnosed_shape_error():
    with pytest.raises(ShapeError, match=r"in_channels=5"):
        infer(cnnlstm.SmallCNN(3, channels=(8,)), (2, 5, 16, 16))


def test_infer_wrong_rank_on_model_raises_shape_error(small_model):
    with pytest.raises(ShapeError, match=r"x\.unsqueeze\(0\)"):
        infer(small_model(), (8, 3, 32, 32))


def test_infer_channels_last_on_model_names_layout(small_model):
    with pytest.raises(ShapeError, match="layout='NTHWC'"):
        infer(small_model(), (2, 8, 32, 32, 3))
