"""explain(): the table of every module call with its input and output shapes."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnnlstm import Explanation, diagnose, explain


def test_explain_rows_and_table(small_model, no_hooks):
    model = small_model()
    table = explain(model, (2, 8, 3, 32, 32))
    assert isinstance(table, Explanation)
    root = table.rows[0]
    assert root.path == ""
    assert root.type == "CNNLSTM"
    assert tuple(root.input) == (2, 8, 3, 32, 32)
    assert tuple(root.output) == (2, 5)
    assert root.params == sum(p.numel() for p in model.parameters())
    assert table.total_params == root.params
    assert tuple(table.output) == (2, 5)
    for r in table.rows:
        assert {"path", "type", "input", "output", "params"} <= set(vars(r))
    by_path = {r.path: r for r in table.rows}
    assert tuple(by_path["bridge"].input) == (2, 8, 16, 8, 8)
    assert tuple(by_path["bridge"].output) == (2, 8, 16)
    assert by_path["bridge"].type == "GlobalAvgPool"
    assert tuple(by_path["backbone.module.block1.conv"].input) == (16, 3, 32, 32)
    assert by_path["backbone.module.block1.conv"].params == 3 * 8 * 9
    assert by_path["head.fc"].params == 16 * 5 + 5
    text = str(table)
    for column in ("module", "type", "input", "output", "params"):
        assert column in text.splitlines()[0]
    assert "(model)" in text
    assert "(2, 8, 16, 8, 8)" in text
    assert no_hooks(model)


def test_explain_counts_repeated_calls():
    relu = nn.ReLU()
    net = nn.Sequential(nn.Linear(4, 8), relu, nn.Linear(8, 8), relu)
    table = explain(net, (2, 4))
    relus = [r for r in table.rows if r.type == "ReLU"]
    assert len(relus) == 1
    assert relus[0].calls == 2
    assert "ReLU x2" in str(table)
    assert table.rows[0].params == 4 * 8 + 8 + 8 * 8 + 8


def test_explain_wrong_shape_says_why_and_removes_hooks(small_model, no_hooks):
    model = small_model()
    table = explain(model, (2, 8, 5, 32, 32))
    assert not table.ok and "C=3" in table.error and str(table).splitlines()[-1].startswith("error: ")
    assert no_hooks(model)


def test_explain_on_a_broken_model_shows_the_rows_up_to_the_failing_module():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(100, 10))  # 4*14*14 = 784 in
    table = explain(net, (2, 3, 16, 16))
    assert [r.path for r in table.rows] == ["", "0", "1", "2", "3"] and table.failed == "3"
    text = str(table)
    marked = [line for line in text.splitlines() if line.endswith("<- failed here")]
    assert len(marked) == 1 and "Linear" in marked[0]
    assert "in_features=784" in table.error
    assert repr(table) == text  # a REPL prints the table


def test_explain_and_diagnose_take_a_tensor_or_an_array_for_its_shape(small_model):
    model = small_model()
    x = np.zeros((2, 8, 3, 32, 32), np.float32)
    assert str(explain(model, x)) == str(explain(model, (2, 8, 3, 32, 32)))
    assert diagnose(model, torch.from_numpy(x)).ok
    bad = explain(model, np.zeros((2, 8, 5, 32, 32)))
    assert len(bad.error) < 600  # the shape, not the array's values, in the message
