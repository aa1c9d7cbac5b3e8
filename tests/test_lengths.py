"""Padding lengths and masks: one home for every module that takes ``lengths``."""

import pytest
import torch

from cnnlstm import ShapeError
from cnnlstm.lengths import check_lengths, pooled_lengths, valid_mask


def test_valid_mask_marks_the_steps_before_each_length_on_the_lengths_device():
    mask = valid_mask(torch.tensor([1, 3, 2]), 3)
    assert mask.tolist() == [[True, False, False], [True, True, True], [True, True, False]]
    assert valid_mask(torch.tensor([1, 2], device="meta"), 3).device.type == "meta"


def test_check_lengths_returns_int64_and_names_the_owner_in_its_errors():
    assert check_lengths(None, 2, 5, "x") is None
    assert check_lengths([5, 1], 2, 5, "x").dtype == torch.int64
    with pytest.raises(ShapeError, match=r"owner: lengths must be \(N,\) = \(2,\)"):
        check_lengths(torch.tensor([1, 2, 3]), 2, 5, "owner")
    with pytest.raises(ShapeError, match="must be integers"):
        check_lengths(torch.tensor([1.0, 2.0]), 2, 5, "owner")
    with pytest.raises(ShapeError, match=r"in 1..T=5 .* got min 0, max 6"):
        check_lengths(torch.tensor([0, 6]), 2, 5, "owner")


def test_pooled_lengths_count_every_window_a_valid_step_reaches():
    assert pooled_lengths(torch.tensor([1, 4, 5, 8]), 4).tolist() == [1, 1, 2, 2]
    assert pooled_lengths(torch.tensor([3]), 1).tolist() == [3]
    assert pooled_lengths(None, 4) is None
