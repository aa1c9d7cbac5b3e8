"""Anomaly detection, training: learn normal videos or a normal series by predicting ahead (see
:mod:`cnnlstm.anomaly` for the method), then calibrate the threshold on held-out normal data.

A fifth of the normal data is held out: the step errors on it set the standardisation and the threshold
(``false_alarm_rate`` of held-out normal sequences above it). Scoring new data is
:func:`cnnlstm.apps.anomaly.score_anomaly`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..anomaly import calibrate, mean_change, next_step_errors
from ..build import preset
from ..data.batch import collate_clips, window_loader
from ..data.datasets import ClipSpec, VideoDataset, VideoItem
from ..data.sequences import labelled_sequence, video_files, whole_video
from ..data.series import Normalizer
from ..errors import ConfigError, DataError
from ..model import CNNLSTM
from ..run import DataSpec, Kind, SeriesSpec, TrainSummary
from ._lightning import TaskModule, fit_module, start_run, write_run
from .options import TrainOptions

__all__ = ["ANOMALY_TRAINING", "AnomalyModule", "anomaly_training", "default_epochs", "fit_anomaly"]

# six frames ahead, as a change of the 6x6-pooled frame: see cnnlstm.anomaly for why not the next frame
VIDEO_TARGET = {"grid": 6, "horizon": 6, "residual": True}
SERIES_TARGET = {"grid": 8, "horizon": 1, "residual": False}
VIDEO_EPOCHS, SERIES_EPOCHS = 60, 15
ANOMALY_TRAINING = {"batch_size": 16, "lr": 3e-3}
HELD_OUT = 0.2  # of the normal data, for the standardisation and the threshold


class AnomalyModule(TaskModule):
    """Mean squared error of the prediction ``horizon`` steps ahead, over the steps that have one.

    Args:
        target: :func:`~cnnlstm.anomaly.next_step_errors`' ``grid``/``horizon``/``residual``.
    """

    def __init__(self, model_config: dict[str, Any], *args: Any, target: dict[str, Any] | None = None, **kw: Any):
        super().__init__(model_config, *args, **kw)

    def loss(self, x: torch.Tensor, batch: dict[str, Any], stage: str) -> torch.Tensor:
        target = self.hparams.target or {}
        kind = "video" if "video" in batch else "series"
        lengths, h = batch["lengths"], target.get("horizon", 1)
        err = next_step_errors(self.model, x, kind, lengths=lengths, **target)  # (N, T)
        steps = (err.shape[1] - h) * len(x) if lengths is None else int((lengths - h).clamp(min=0).sum())
        return err.sum() / max(1, steps)


def default_epochs(data: str | Path) -> int:
    """Training epochs when none are given: ``VIDEO_EPOCHS`` for a folder of videos, ``SERIES_EPOCHS`` for a series."""
    return VIDEO_EPOCHS if Path(data).is_dir() else SERIES_EPOCHS


def anomaly_training(data: str | Path, given: dict[str, Any] | None = None) -> TrainOptions:
    """The training options of an anomaly run on ``data``: ``default_epochs(data)`` and ``ANOMALY_TRAINING``,
    with ``given`` options on top."""
    return TrainOptions(**{"epochs": default_epochs(data), **ANOMALY_TRAINING, **(given or {})})


@dataclass
class _Normal:
    """Normal data made ready: the model, its training loader, the held-out sequences and the data spec."""

    model: CNNLSTM
    loader: Any
    held: list[torch.Tensor]
    kind: Kind
    input: ClipSpec | SeriesSpec
    target: dict[str, Any]


def _normal_videos(src: str, opts: TrainOptions, size: tuple[int, int], clip_len: int) -> _Normal:
    root = Path(src)
    folder = root / "train" / "normal" if (root / "train" / "normal").is_dir() else root
    files = video_files(folder)
    if not files:
        raise DataError(f"{folder} holds no video files to learn normal motion from")
    h = VIDEO_TARGET["horizon"]
    if clip_len <= h:
        raise DataError(
            f"clip_len {clip_len} leaves nothing to predict {h} frames ahead: use clips longer than {h + 2} frames"
        )
    order = np.random.default_rng(opts.seed).permutation(len(files))
    cut = max(1, int(len(files) * HELD_OUT))
    # short videos are padded with lengths, not by repeating the last frame (that would teach freezes)
    spec = ClipSpec(clip_len=clip_len, size=size, sampling="random", pad="lengths")
    full = VideoDataset([VideoItem(str(files[i]), 0) for i in order], ["normal"], spec=spec, seed=opts.seed)
    g = VIDEO_TARGET["grid"]
    model = CNNLSTM(**preset("video-anomaly"), input_shape=(None, 3, *size), head="frames", num_classes=3 * g * g)
    loader = torch.utils.data.DataLoader(
        full.subset(range(cut, len(full))), batch_size=opts.batch_size, shuffle=True, collate_fn=collate_clips,
        generator=torch.Generator().manual_seed(opts.seed),
    )  # fmt: skip
    held = full.subset(range(cut))
    held_seqs = [whole_video(held, i) for i in range(len(held))]
    # the prediction may not diverge on still scenes: eps is a tenth of the normal change size
    relative = max(0.1 * mean_change(held_seqs, h, g), 1e-6)
    return _Normal(model, loader, held_seqs, Kind.VIDEO_ANOMALY, spec, {**VIDEO_TARGET, "relative": relative})


def _normal_series(src: str, opts: TrainOptions, window: int) -> _Normal:
    values, _ = labelled_sequence(src, "train")
    cut = int(len(values) * (1 - HELD_OUT))
    norm = Normalizer.fit([values[:cut]])
    v = norm(values)
    starts = range(0, max(1, cut - window + 1), max(1, window // 4))  # windows overlapping by 3/4
    xs = torch.stack([torch.from_numpy(v[s : s + window]) for s in starts])  # (N, window, F)
    model = CNNLSTM(
        **preset("series-anomaly"), layout="NTF", input_shape=(None, v.shape[1]), head="frames", num_classes=v.shape[1]
    )
    held_starts = range(cut, max(cut + 1, len(v) - window + 1), max(1, window // 2))  # overlapping by half
    held = [torch.from_numpy(v[s : s + window]) for s in held_starts]
    spec = SeriesSpec(src, v.shape[1], norm.mean, norm.std)
    loader = window_loader(xs, None, opts.batch_size, opts.seed)
    return _Normal(model, loader, held, Kind.SERIES_ANOMALY, spec, dict(SERIES_TARGET))


def fit_anomaly(
    data: str | Path,
    out: str | Path,
    options: TrainOptions | None = None,
    window: int = 128,
    false_alarm_rate: float = 0.05,
    size: tuple[int, int] = (48, 48),
    clip_len: int = 16,
) -> TrainSummary | None:
    """Learn normal data: a folder of normal videos (``data/train/normal`` if it exists), or a normal series.

    Args:
        data: the folder, or a series source (``aeon:KDD-TSAD_NNN``'s training part, a CSV, a ``.npy``).
        out: the run folder.
        options: default: ``default_epochs(data)`` epochs and ``ANOMALY_TRAINING``.
        window: series: training window length.
        false_alarm_rate: share of held-out normal sequences allowed above the threshold.
        size, clip_len: videos: frame size ``(H, W)`` and frames per training clip.
    """
    src = str(data)
    opts = options or anomaly_training(src)
    if opts.ensemble > 1:
        raise ConfigError("an anomaly detector is one model (its threshold is calibrated on it): drop --ensemble")
    folder, resume_from = start_run(out, opts)
    t0 = time.time()
    kind = "video" if Path(src).is_dir() else "series"
    normal = _normal_videos(src, opts, size, clip_len) if kind == "video" else _normal_series(src, opts, window)
    train_target = {k: v for k, v in normal.target.items() if k != "relative"}
    module = AnomalyModule(
        normal.model.config.to_dict(),
        opts.lr,
        opts.weight_decay,
        opts.epochs,
        target=train_target,
        schedule=opts.schedule,
    )
    fitted = fit_module(folder, module, (normal.loader, None), opts, resume_from)
    if fitted is None:
        return None
    model = module.model.eval()
    with torch.inference_mode():
        errs = [next_step_errors(model, s[None], kind, **normal.target)[0].numpy() for s in normal.held]
    # a prediction needs two seen steps (a direction of motion) before it can be judged
    stats = calibrate(errs, false_alarm_rate, warmup=max(3, normal.target["horizon"] + 2), **normal.target)
    return write_run(
        folder, model, opts, fitted, DataSpec(normal.kind, normal.input, anomaly=stats), ["normal"], t0,
        data=src, train_items=len(normal.loader.dataset), val_items=len(normal.held), threshold=stats.threshold,
    )  # fmt: skip
