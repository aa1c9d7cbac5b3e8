"""bench/edge.py's helpers on a tiny model: long streams looped from clips, the drift per window, the tables (no
timing is asserted)."""

import sys
from pathlib import Path

import pytest
import torch

import cnnlstm as cl

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import _edge
import edge

pytestmark = pytest.mark.usefixtures("one_thread")


def test_looped_frames_play_the_clips_in_turn_from_each_streams_own():
    clips = torch.arange(3 * 4).float().reshape(3, 4, 1, 1, 1).expand(3, 4, 2, 2, 2)  # clip i frame t = 4i + t
    long = _edge.looped_frames(clips, 10, 2)
    assert long.shape == (2, 10, 2, 2, 2)
    assert long[0, :, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]  # clips 0, 1, 2
    assert long[1, :, 0, 0, 0].tolist() == [4, 5, 6, 7, 8, 9, 10, 11, 0, 1]  # clips 1, 2, then 0 again
    assert _edge.batch_of(clips, 8).shape[0] == 8 and torch.equal(_edge.batch_of(clips, 8)[3], clips[0])


def test_the_drift_of_a_tiny_models_stream_per_window():
    torch.manual_seed(0)
    model = cl.CNNLSTM(input_shape=(4, 3, 16, 16), num_classes=3, hidden_size=8, backbone_options={"channels": (4,)})
    frames = _edge.looped_frames(torch.randn(3, 4, 3, 16, 16), 120, 2)  # (2, 120, 3, 16, 16)
    ref = edge.torch_stream(model.eval(), frames)
    assert ref.shape == (2, 120, 3)
    got = ref.copy()
    got[1, 60] += 0.5  # one frame off in the second window
    got[0, 110, ref[0, 110].argmin()] += 100.0  # one frame with another top-1 class in the last
    rows = _edge.drift_windows(ref, got)
    assert [r["frames"] for r in rows] == ["0-49", "50-99", "100-119"]
    assert [r["max_abs_diff"] for r in rows[:2]] == [0.0, pytest.approx(0.5)] and rows[2]["max_abs_diff"] >= 100
    assert [r["top1_agreement"] for r in rows] == [1.0, 1.0, pytest.approx(1 - 1 / 40)]
    table = _edge.drift_table({"rows": {"int8 step": rows}})
    assert table[0].startswith("| artifact | frames 0-49: max abs diff, agreement |")
    assert table[2].startswith("| int8 step | 0.00e+00, 1.000 | 5.00e-01, 1.000 |")
    with pytest.raises(ValueError, match="logits of one shape"):
        _edge.drift_windows(ref, got[:, :10])


def test_the_table_and_the_timing_rounds():
    calls = []
    times = _edge.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 2, 3, 1)
    assert calls == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3  # warm-up, then interleaved rounds
    assert times["a"]["n"] == 6 and times["a"]["min"] <= times["a"]["median"] <= times["a"]["max"]
    ms, fast = {"1": {"median": 5.0}, "8": {"median": 40.0}}, {"1": {"median": 2}, "8": {"median": 10}}
    rows = [
        {"name": "PyTorch float32", "size_mb": {"clip": 6.8, "stream": 6.8}, "clip_ms": ms, "frame_ms": {"median": 2},
         "agreement": 1.0, "accuracy": 0.9},
        {"name": "X int8", "size_mb": {"clip": 1.7, "stream": 1.7}, "clip_ms": fast,
         "frame_ms": {"median": 1}, "agreement": 0.99, "accuracy": None},
        {"name": "Y bf16", "skipped": "--precision bf16 on OpenVINO needs a CPU that computes in bfloat16 natively"},
    ]  # fmt: skip
    lines = _edge.table(rows, 2)
    assert lines[0].startswith("| artifact (2 threads) |")
    assert lines[2] == "| PyTorch float32 | 6.80 / 6.80 | 5.00 | 40.0 | 200 | 1.00 | 2.00 | 1.00 | 1.000 | 0.900 |"
    assert lines[3] == "| X int8 | 1.70 / 1.70 | 2.00 | 10.0 | 800 | 4.00 | 1.00 | 2.00 | 0.990 | - |"
    assert lines[4].startswith("| Y bf16 | --precision bf16 on OpenVINO needs")
    assert len(lines[4].split("|")) == len(lines[0].split("|"))  # a skipped row keeps the columns
