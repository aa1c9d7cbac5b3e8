"""Data: video decoding (PyAV), clip sampling, data sets, and the synthetic demo data."""

from .sampling import PADS, SAMPLINGS, dense_windows, random_indices, sample, uniform_indices
from .video import VIDEO_EXTENSIONS, VideoInfo, iter_frames, probe, read_frames, write_video

__all__ = [
    "PADS",
    "SAMPLINGS",
    "VIDEO_EXTENSIONS",
    "VideoInfo",
    "dense_windows",
    "iter_frames",
    "probe",
    "random_indices",
    "read_frames",
    "sample",
    "uniform_indices",
    "write_video",
]
