"""What the doctor reports: Finding, Diagnosis and the one shape formatter the package uses."""

from __future__ import annotations

import torch

from cnnlstm import Finding
from cnnlstm.shapes import format_shape
from cnnlstm.shapes.findings import Site


def test_format_shape_writes_unknown_sizes_as_question_marks():
    assert format_shape(torch.Size([8, 16, 64])) == "(8, 16, 64)"
    assert format_shape((8, None, 64)) == "(8, ?, 64)"
    assert format_shape(()) == "()"
    assert format_shape((torch.Size([4, 7, 16]), (torch.Size([1, 4, 16]), None))) == "((4, 7, 16), ((1, 4, 16), -))"
    assert format_shape(None) == "-"
    assert format_shape({"steps": 3}) == "{'steps': 3}"


def test_site_finding_and_its_message():
    at = Site("rnn.lstm", "LSTM", (8, 16, 64), "(N, T, F=512) with batch_first=True")
    err = at.finding("a clip", "Put a bridge in front.")
    assert err == Finding("error", "rnn.lstm", "LSTM", (8, 16, 64), at.wants, "a clip", "Put a bridge in front.")
    assert (
        str(err)
        == "LSTM 'rnn.lstm' wants (N, T, F=512) with batch_first=True, got (8, 16, 64): a clip. Put a bridge in front."
    )
    warning = Site("", "Net", (8, None)).finding("odd", "", "warning")
    assert warning.severity == "warning"
    assert str(warning) == "Net got (8, ?): odd."
