"""The meta dry run: placeholders for unknown sizes, the dry-run marker, the module left as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlstm import ShapeError
from cnnlstm.shapes._dry import check_shape, diagnosing, dry_run, merge_unknown, placeholders, run


def test_run_costs_no_memory_and_leaves_the_module_on_its_device():
    linear = nn.Linear(4, 8)
    out = run(linear, (1 << 20, 4), torch.float32, {})
    assert out.device.type == "meta"
    assert out.shape == (1 << 20, 8)
    assert linear.weight.device.type == "cpu"


def test_dry_run_marks_the_thread_and_nests():
    assert not diagnosing()
    with dry_run():
        assert diagnosing()
        with dry_run():
            assert diagnosing()
        assert diagnosing()
    assert not diagnosing()


def test_dry_run_seen_from_inside_the_forward():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(diagnosing())
            return x

    run(Probe(), (2, 3), torch.float32, {})
    Probe()(torch.zeros(2, 3))
    assert seen == [True, False]


def test_placeholders_and_merge_unknown():
    assert placeholders((2, None, 3)) == (2, 5, 3)
    assert placeholders((2, None, 3), 7) == (2, 7, 3)
    assert merge_unknown(torch.Size([2, 5, 3]), torch.Size([2, 7, 3])) == (2, None, 3)
    assert merge_unknown(torch.Size([2, 3]), torch.Size([2, 3])) == torch.Size([2, 3])
    assert merge_unknown({"a": torch.Size([5])}, {"a": torch.Size([7])}) == {"a": (None,)}


@pytest.mark.parametrize("bad", [(2, 0), (2, True), (2, 1.0), 5, None])
def test_check_shape_names_its_owner(bad):
    with pytest.raises(ShapeError, match=r"^diagnose: (every size in )?input_shape must be"):
        check_shape(bad, "diagnose")
