"""The named model presets: the keyword arguments of :class:`~cnnlstm.CNNLSTM` that each task starts from, and
:class:`ModelOptions`, the options a user gives on top of them (the command line's model options).

``input_shape``, ``layout``, ``num_classes`` and task heads come from the data when a run trains; a
preset holds only the choices of architecture. Options given by a user replace a preset's keys
(``backbone_options`` as a whole in :func:`preset`, key by key in :func:`model_kwargs`).

>>> preset("series")["backbone"]
'fcn'
>>> preset("video", hidden_size=32)["hidden_size"]
32
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigError

__all__ = ["PRESETS", "ModelOptions", "model_kwargs", "preset"]

log = logging.getLogger("cnnlstm")

PRESETS: dict[str, dict[str, Any]] = {
    # the library's defaults for clips (chosen on bench/video_suite.py): small CNN over each frame and its
    # difference from the one before, grid bridge (keeps where things move), LSTM 256
    "video": {"bridge": "grid", "motion": "stack"},
    # the series default, chosen on six UCR/UEA sets (docs/series-accuracy.md): LSTM-FCN (Karim et al. 2017) whose
    # LSTM 128 reads the series' T steps of F features (no dimension shuffle, so any length, masked), its last
    # valid state with dropout 0.8 joined with the FCN's (128-256-128, kernels 8-5-3) mean over valid steps
    "series": {
        "backbone": "fcn",
        "bridge": "none",
        "arrangement": "parallel",
        "arrangement_options": {"dimension_shuffle": False, "dropout": 0.8},
        "hidden_size": 128,
        "head": "last",
    },
    # the series default before issue 18: dilated conv1d, time max-pooled by 4, bidirectional LSTM, mean over
    # steps; a causal, streaming series model starts from it (``causal=True``)
    "conv1d-bilstm": {
        "backbone": "conv1d",
        "backbone_options": {"channels": (64, 64, 64), "kernel_size": 7, "dilated": True, "pool": 4},
        "bridge": "none",
        "hidden_size": 128,
        "bidirectional": True,
        "head": "mean",
    },
    # causal conv1d before an LSTM; the head predicts ``horizon`` steps of each target
    "forecast": {
        "backbone": "conv1d",
        "backbone_options": {"channels": (32, 32), "kernel_size": 3, "causal": True, "dilated": True},
        "bridge": "none",
        "hidden_size": 64,
    },
    # per-frame predictions of the next frames; flatten keeps where things are
    "video-anomaly": {"backbone_options": {"channels": (16, 32, 64)}, "bridge": "flatten", "hidden_size": 256},
    "series-anomaly": {
        "backbone": "conv1d",
        "backbone_options": {"channels": (32, 32), "kernel_size": 5, "causal": True},
        "bridge": "none",
        "hidden_size": 64,
    },
    # the field's series CNNs (issue 18), each before the series preset's BiLSTM 128 and mean head, so that only the
    # backbone differs: Wang et al. 2017's FCN (128-256-128, kernels 8-5-3) and ResNet (64-128-128), InceptionTime's
    # six modules (32 filters per branch, kernels 40-20-10 made odd)
    **{
        name: {"backbone": backbone, "bridge": "none", "hidden_size": 128, "bidirectional": True, "head": "mean"}
        for name, backbone in (("fcn", "fcn"), ("resnet", "resnet1d"), ("inception", "inception1d"))
    },
    # LSTM-FCN (Karim et al. 2017): the FCN beside an LSTM 128 that reads the series dimension-shuffled (F steps of
    # T features, so T is fixed), its last state with dropout 0.8, joined with the FCN's mean over steps
    "lstm-fcn": {
        "backbone": "fcn",
        "bridge": "none",
        "arrangement": "parallel",
        "arrangement_options": {"dimension_shuffle": True, "dropout": 0.8},
        "hidden_size": 128,
        "head": "last",
    },
    # MLSTM-FCN (Karim et al. 2019), for multivariate series: LSTM-FCN with squeeze-and-excite after the first two
    # conv blocks (reduction 16)
    "mlstm-fcn": {
        "backbone": "fcn",
        "backbone_options": {"se": True},
        "bridge": "none",
        "arrangement": "parallel",
        "arrangement_options": {"dimension_shuffle": True, "dropout": 0.8},
        "hidden_size": 128,
        "head": "last",
    },
}


def preset(name: str, **overrides: Any) -> dict[str, Any]:
    """A fresh copy of preset ``name`` with ``overrides`` replacing its keys.

    The preset's ``backbone_options`` are its own backbone's: another ``backbone`` given without options of its
    own starts from none (``arrangement_options`` likewise).

    >>> preset("conv1d-bilstm", backbone="fcn").get("backbone_options")
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}: expected one of {', '.join(PRESETS)}")
    kw = {**copy.deepcopy(PRESETS[name]), **overrides}
    for key in ("backbone", "arrangement"):
        if kw.get(key) != PRESETS[name].get(key) and f"{key}_options" not in overrides:
            kw.pop(f"{key}_options", None)
    return kw


@dataclass
class ModelOptions:
    """Model choices a user gives; None keeps the preset's (or :class:`~cnnlstm.CNNLSTM`'s) own.

    Attributes:
        preset: start from this named model (series: fcn, resnet, inception, lstm-fcn, mlstm-fcn, conv1d-bilstm)
            in place of the task's own; the other options given change it.
        backbone: small | conv1d | fcn | resnet1d | inception1d | torchvision:NAME | timm:NAME.
        backbone_channels: channels of the backbone's blocks, e.g. 16,32,64.
        bridge: how feature maps become a sequence (default: videos grid, series none).
        grid_k: cells per side of the grid bridge.
        rnn: the recurrent layer (default lstm; convlstm: a ConvLSTM over the backbone's maps, bridged after it).
        hidden_size: the RNN's state size.
        num_layers: stacked RNN layers.
        bidirectional: a bidirectional RNN (series default: on, unless causal).
        head: how the RNN's steps become one output (default last; series mean).
        dropout: between RNN layers and before the classifier.
        kernel_size: series: conv1d kernel size (given alone, the series model is conv1d-bilstm's).
        causal: series: a model that can stream (conv1d-bilstm's, with causal convolutions, no pooling, one-way RNN).
        pool: series: max-pool time by this factor before the RNN (conv1d-bilstm's).
        motion: videos: frame differences in front of the CNN: none, diff (alone) or stack (beside the frames; default).
        rnn_kernel_size: ConvLSTM: the kernel size of its gates' convolution (default 3).
        arrangement: series: sequential (the RNN after the CNN) or parallel (LSTM-FCN: the RNN beside it, on the
            series).
        dimension_shuffle: parallel: the RNN reads F steps of T features (LSTM-FCN's; the series' length is then
            fixed).
        arm_dropout: parallel: dropout on the RNN's output before it joins the CNN's (default 0.8).
        se: with backbone fcn: squeeze-and-excite after each conv block but the last (MLSTM-FCN, for multivariate
            series).
    """

    preset: str | None = None
    backbone: str | None = None
    backbone_channels: tuple[int, ...] | None = None
    bridge: str | None = None
    grid_k: int | None = None
    rnn: str | None = None
    hidden_size: int | None = None
    num_layers: int | None = None
    bidirectional: bool | None = None
    head: str | None = None
    dropout: float | None = None
    kernel_size: int | None = None
    causal: bool | None = None
    pool: int | None = None
    motion: str | None = None
    rnn_kernel_size: int | None = None
    arrangement: str | None = None
    dimension_shuffle: bool | None = None
    arm_dropout: float | None = None
    se: bool | None = None

    def given(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


_TOP = (
    "backbone",
    "bridge",
    "rnn",
    "hidden_size",
    "num_layers",
    "bidirectional",
    "head",
    "dropout",
    "motion",
    "arrangement",
)
_BACKBONE = {
    "backbone_channels": "channels",
    "kernel_size": "kernel_size",
    "pool": "pool",
    "causal": "causal",
    "se": "se",
}
_CONV1D = ("causal", "kernel_size", "pool")  # options only the conv1d series backbone takes
_ARRANGEMENT = {"dimension_shuffle": "dimension_shuffle", "arm_dropout": "dropout"}


def model_kwargs(name: str, options: ModelOptions | None = None) -> dict[str, Any]:
    """:class:`~cnnlstm.CNNLSTM` keyword arguments: preset ``name`` with the given ``options`` on top.

    Backbone options (channels, kernel size, pooling, causal, squeeze-and-excite) and the parallel arrangement's
    (dimension shuffle, the RNN arm's dropout) replace the preset's key by key; another backbone than the preset's
    (another arrangement) starts from none of the preset's. A ``causal``
    series model streams: unless given otherwise, it pools time by 1, runs its RNN one way and reads the last
    step.

    >>> model_kwargs("series", ModelOptions(causal=True))["backbone_options"]["pool"]
    1
    """
    given = (options or ModelOptions()).given()
    name = given.pop("preset", name)
    if name == "series" and "backbone" not in given and any(k in given for k in _CONV1D):
        name = "conv1d-bilstm"  # causal streaming, a kernel size or pooling: the conv1d series model's options
    kw = preset(name, **{k: given[k] for k in _TOP if k in given})
    # a preset's backbone options are its own backbone's, its arrangement options the parallel arrangement's:
    # another backbone (or arrangement) given starts from none
    own = kw.pop("backbone_options", {})
    backbone = dict(own) if kw.get("backbone") == PRESETS[name].get("backbone") else {}
    own = kw.pop("arrangement_options", {})
    arrangement = dict(own) if kw.get("arrangement") == "parallel" else {}
    backbone.update({_BACKBONE[k]: given[k] for k in _BACKBONE if k in given})
    if backbone.get("causal"):
        if "pool" not in given:
            backbone["pool"] = 1
        if "bidirectional" not in given:
            kw["bidirectional"] = False
        if "head" not in given:
            kw["head"] = "last"
        if kw["bidirectional"] or backbone["pool"] > 1:
            log.warning("a causal model with a bidirectional RNN or pooling > 1 cannot stream")
    kw["backbone_options"] = backbone  # {}: another backbone leaves the preset's behind
    if "grid_k" in given and kw.get("bridge", "gap") == "grid":
        kw["bridge_options"] = {"k": given["grid_k"]}
    arrangement.update({_ARRANGEMENT[k]: given[k] for k in _ARRANGEMENT if k in given})
    # every key a task's preset holds is set, so that merging these into it (the training entry does) changes
    # nothing: a sequential model gets no parallel options
    kw.setdefault("arrangement", "sequential")
    kw["arrangement_options"] = arrangement
    if "rnn_kernel_size" in given:
        kw["rnn_options"] = {**kw.get("rnn_options", {}), "kernel_size": given["rnn_kernel_size"]}
    return kw
