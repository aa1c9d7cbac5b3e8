"""data.json: every kind round-trips, folders of format 1 still load, bad files are named."""

import pytest

from cnnlstm.anomaly import AnomalyStats
from cnnlstm.data.datasets import ClipSpec
from cnnlstm.errors import ConfigError
from cnnlstm.run import FORMAT, DataSpec, ForecastSpec, Kind, SeriesSpec

SERIES = SeriesSpec("aeon:GunPoint", 1, [0.5], [2.0])
STATS = AnomalyStats(0.1, 0.2, 3.0, 0.05, horizon=6, residual=True, grid=6, relative=0.01)
SPECS = [
    DataSpec(Kind.VIDEO_CLASSIFY, ClipSpec(clip_len=8, size=(48, 64))),
    DataSpec(Kind.SERIES_CLASSIFY, SERIES),
    DataSpec(Kind.SERIES_FORECAST, SERIES, forecast=ForecastSpec(24, 12, [0], 12)),
    DataSpec(Kind.VIDEO_ANOMALY, ClipSpec(pad="lengths"), anomaly=STATS),
    DataSpec(Kind.SERIES_ANOMALY, SERIES, anomaly=STATS),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.kind.value)
def test_every_kind_round_trips(spec):
    d = spec.to_dict()
    assert d["format"] == FORMAT and d["kind"] == spec.kind.value
    assert DataSpec.from_dict(d) == spec


def test_kind_names_modality_and_task():
    assert [(k.modality, k.task) for k in Kind] == [
        ("video", "classify"), ("series", "classify"), ("series", "forecast"), ("video", "anomaly"),
        ("series", "anomaly"),
    ]  # fmt: skip


def test_format_1_folders_still_load():
    clip = ClipSpec(clip_len=8).to_dict()
    series = {"source": "aeon:GunPoint", "features": 1, "mean": [0.5], "std": [2.0]}
    forecast = {"lookback": 24, "horizon": 12, "targets": [0], "holdout": 12}
    got = [
        DataSpec.from_dict(clip),
        DataSpec.from_dict({"kind": "series", **series}),
        DataSpec.from_dict({"kind": "series", "task": "forecast", **series, **forecast}),
        DataSpec.from_dict({"kind": "video-anomaly", **clip, "anomaly": STATS.to_dict()}),
        DataSpec.from_dict({"kind": "series-anomaly", **series, "anomaly": STATS.to_dict()}),
    ]
    assert [g.kind for g in got] == list(Kind)
    assert got[0].input == ClipSpec(clip_len=8) and got[1].input == SERIES
    assert got[2].forecast == ForecastSpec(24, 12, [0], 12) and got[3].anomaly == STATS


@pytest.mark.parametrize(
    "d, match",
    [
        ({"format": 2, "kind": "video-segment", "input": {}}, "unknown run kind 'video-segment': expected one of"),
        ({"format": 2, "kind": "series-classify", "input": {"source": "x"}}, "SeriesSpec"),
        ({"format": 2, "kind": "series-classify", "input": {**SERIES.to_dict(), "x": 1}}, r"unknown SeriesSpec.*'x'"),
        ({"format": 9, "kind": "video-classify", "input": {}}, "format 9 is newer.*upgrade cnnlstm"),
        ({"format": 2, "kind": "series-forecast", "input": SERIES.to_dict()}, "needs forecast windows"),
        ({"clip_len": 8, "colour": "red"}, r"unknown ClipSpec keys \['colour'\]"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_data_specs_say_what_is_wrong(d, match):
    with pytest.raises(ConfigError, match=match):
        DataSpec.from_dict(d)


def test_input_must_fit_the_kind():
    with pytest.raises(ConfigError, match="a video-classify run's input is a ClipSpec, got SeriesSpec"):
        DataSpec(Kind.VIDEO_CLASSIFY, SERIES)
