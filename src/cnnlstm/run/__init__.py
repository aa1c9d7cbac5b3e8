"""The run folder: typed specs of what a run learnt, its summary, and the one place that writes and reads it."""

from .folder import Run, RunFolder, load_run, merge_metrics
from .spec import FORMAT, DataSpec, ForecastSpec, Kind, SeriesSpec
from .summary import TrainSummary

__all__ = [
    "FORMAT",
    "DataSpec",
    "ForecastSpec",
    "Kind",
    "Run",
    "RunFolder",
    "SeriesSpec",
    "TrainSummary",
    "load_run",
    "merge_metrics",
]
