"""The builder of :class:`~cnnlstm.CNNLSTM`'s parts, and the named model presets.

:func:`build_cnnlstm` turns a model's names and numbers (``backbone="small"``, ``bridge="gap"``, ...) into
built parts, with every check; :func:`build_parts` does the same from a :class:`CNNLSTMConfig`. The model's
own code works on the parts it receives.

The presets and the options a user gives on top of them live in :mod:`cnnlstm.presets` (re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import layout as L
from ._messages import sequence_to_maps_rnn_fix
from .backbones import build_backbone, time_stride
from .config import CNNLSTMConfig
from .errors import ConfigError, ShapeError
from .layers.bridges import BRIDGES, Bridge, bridge
from .layers.convlstm import ConvLSTM
from .layers.motion import FrameDifference
from .layers.parallel import ParallelHead, arrangement_options
from .layers.temporal import RNNS, Head, Temporal, head
from .layers.time_distributed import BN_POLICIES, TimeDistributed, freeze_batchnorm
from .presets import PRESETS, ModelOptions, model_kwargs, preset
from .shapes import format_shape, infer

__all__ = [
    "PRESETS",
    "RNN_NAMES",
    "ModelOptions",
    "Parts",
    "build_cnnlstm",
    "build_parts",
    "model_kwargs",
    "preset",
]

# ----------------------------------------------------------------------------- the builder

_DEFAULT_BRIDGE = {"clip": "gap", "image": "spatial", "series": "none"}
_DEFAULT_BACKBONE = {"clip": "small", "image": "small", "series": "conv1d"}


@dataclass
class Parts:
    """A :class:`~cnnlstm.CNNLSTM`'s built parts, in the order data flows through them.

    Attributes:
        config: the config that rebuilds them (names, options, shapes).
        motion: the motion input in front of the CNN (:class:`FrameDifference`; mode ``"none"`` passes frames).
        backbone: the CNN; a :class:`TimeDistributed` for clips.
        bridge: from the backbone's feature maps to a sequence ``(N, T', F)``; after a ConvLSTM, from its
            output maps.
        rnn: the LSTM/GRU over the sequence, or the :class:`~cnnlstm.ConvLSTM` over the backbone's maps.
        head: from the RNN's states (the bridged ConvLSTM maps) to outputs; in the parallel arrangement, a
            :class:`~cnnlstm.layers.parallel.ParallelHead` that joins the CNN arm's steps and the RNN arm's.
        feature_shape: one sample's backbone output, e.g. ``(T, C', H', W')`` (from a dry run on meta).
    """

    config: CNNLSTMConfig
    motion: FrameDifference
    backbone: nn.Module
    bridge: Bridge
    rnn: Temporal | ConvLSTM
    head: Head | ParallelHead
    feature_shape: tuple


def build_cnnlstm(backbone: str | nn.Module | None = None, bridge: str | Bridge | None = None, **options) -> Parts:
    """The parts :class:`~cnnlstm.CNNLSTM` is made of, from the same arguments (names or modules).

    Args:
        backbone, bridge: names, or built modules (recorded as ``"custom"`` unless a registered bridge).
        options: the other :class:`CNNLSTMConfig` fields; ``backbone_options={"weights": path}`` loads local
            weights (not saved in the config) and makes the BatchNorm policy ``"frozen"`` unless ``bn`` is given.

    >>> parts = build_cnnlstm("small", "grid", input_shape=(8, 3, 32, 32), backbone_options={"channels": (8,)})
    >>> parts.feature_shape, parts.rnn.input_size
    ((8, 8, 16, 16), 32)
    """
    config, weights = _config(backbone, bridge, **options)
    return build_parts(
        config,
        backbone=backbone if isinstance(backbone, nn.Module) else None,
        bridge=bridge if isinstance(bridge, Bridge) else None,
        weights=weights,
    )


def build_parts(
    config: CNNLSTMConfig, *, backbone: nn.Module | None = None, bridge: Bridge | None = None, weights: Any = None
) -> Parts:
    """Build a model's parts from its config: the backbone, a dry run for its feature shape, the bridge for
    that shape, the RNN for the bridge's ``F``, the head for the RNN. With ``rnn="convlstm"`` the order of
    the middle changes: the ConvLSTM for the backbone's maps, the bridge for the ConvLSTM's maps, the head
    for the bridge's ``F``.

    Args:
        config: a complete config (:func:`build_cnnlstm` fills in the defaults by layout).
        backbone, bridge: modules to use instead of building the config's names (needed where the config says
            ``"custom"``).
        weights: a local weights file for the backbone.
    """
    for part, given in (("backbone", backbone), ("bridge", bridge)):
        if getattr(config, part) == "custom" and given is None:
            raise ConfigError(
                f"this model was built with a custom {part} module, which a config cannot rebuild: "
                f"pass it again, e.g. CNNLSTM.from_pretrained(dir, {part}=my_{part})"
            )
    lay = L.parse(config.layout)
    _check_rnn(config)
    _check_arrangement(config)
    sample = L.canonical_shape(config.input_shape, lay)  # (T, C, H, W) | (C, H, W) | (T, F)
    motion = FrameDifference(config.motion)
    if config.motion != "none":
        if L.kind(lay) != "clip":
            raise ConfigError(f"motion={config.motion!r} needs clips (frames over time); a {L.kind(lay)} has none")
        sample = (sample[0], motion.channels(sample[1]), *sample[2:])  # what the CNN reads
    cnn = _backbone(config, sample, backbone, weights)
    feats = _feature_shape(cnn, config, sample)  # (1, *one sample's backbone output)
    if config.rnn == CONVLSTM:
        return _convlstm_parts(config, motion, cnn, feats, bridge)
    b = _bridge(config, feats, bridge)
    if config.arrangement == "parallel":
        return _parallel_parts(config, motion, cnn, b, feats, sample)
    f = b.output_shape(feats)[-1]  # F: the RNN's input size, never typed by hand
    rnn = Temporal(f, config.hidden_size, config.rnn, config.num_layers, config.bidirectional, config.dropout)
    out = head(config.head, rnn, config.num_classes, **config.head_options)
    if out.per_step and time_stride(cnn) > 1:
        raise ConfigError(
            f"head={config.head!r} gives one output per step, but the backbone pools time by {time_stride(cnn)}: "
            "use backbone_options={'pool': 1}, or a head over the whole sequence (last, mean, attention)"
        )
    return Parts(config, motion, cnn, b, rnn, out, feats[1:])


CONVLSTM = "convlstm"
RNN_NAMES = (*RNNS, CONVLSTM)  # every rnn= a model takes: nn.LSTM/nn.GRU in a Temporal, or a ConvLSTM


def _check_rnn(config: CNNLSTMConfig) -> None:
    """The rnn's name and options, and what a ConvLSTM needs: clips, one direction."""
    if config.rnn not in RNN_NAMES:
        raise ConfigError(f"unknown rnn {config.rnn!r}: expected one of {', '.join(RNN_NAMES)}")
    if config.rnn != CONVLSTM:
        if config.rnn_options:
            raise ConfigError(
                f"rnn={config.rnn!r} takes no rnn_options (got {sorted(config.rnn_options)}): they are a ConvLSTM's "
                "own options (kernel_size, bias); hidden_size, num_layers, dropout and bidirectional are the RNN's"
            )
        return
    if config.bidirectional:
        raise ConfigError(
            "rnn='convlstm' runs one way: a bidirectional ConvLSTM is not implemented. Build it with "
            "bidirectional=False, or use rnn='lstm' after a bridge for a bidirectional LSTM"
        )
    kind = L.kind(config.layout)
    if kind == "series":
        raise ShapeError(
            f"rnn='convlstm' wants a clip's feature maps (N, T, C, H, W), but a {config.layout} model with "
            f"input_shape {config.input_shape} feeds it a sequence (N, T, F): a ConvLSTM reads each frame's maps, "
            "not features. Use rnn='lstm' (or 'gru') for series, or a clip layout (NTCHW) with frames for a ConvLSTM"
        )
    if kind == "image":
        raise ConfigError(
            "rnn='convlstm' steps through a clip's frames, and an image has no time axis: build a clip model "
            "(layout='NTCHW' with T in input_shape), or use rnn='lstm' with bridge='spatial' for one image"
        )


def _check_arrangement(config: CNNLSTMConfig) -> None:
    """The arrangement's name and options; the parallel one is for series."""
    arrangement_options(config.arrangement, config.arrangement_options)
    kind = L.kind(config.layout)
    if config.arrangement == "parallel" and kind != "series":
        raise ConfigError(
            f"arrangement='parallel' (LSTM-FCN) runs an RNN over the raw input beside the CNN, which is for series "
            f"(layout NTF or NFT); a {kind} model's raw input is pixels: build it with arrangement='sequential' "
            "(the RNN after the CNN)"
        )


def _parallel_parts(
    config: CNNLSTMConfig, motion: FrameDifference, cnn: nn.Module, b: Bridge, feats: tuple, sample: tuple
) -> Parts:
    """LSTM-FCN: the RNN reads the raw series (``T`` steps of ``F``; dimension-shuffled, ``F`` steps of ``T``) beside
    the backbone; the head joins the backbone's mean over valid steps and the RNN's summary."""
    opts = arrangement_options(config.arrangement, config.arrangement_options)
    t, f = sample  # one series: (T, F)
    if opts["dimension_shuffle"] and t is None:
        raise ConfigError(
            f"dimension_shuffle reads each series as F steps of T features, so T is the RNN's input size and must "
            f"be fixed, but input_shape {config.input_shape} leaves T open: give input_shape with T (the series' "
            "length; pad shorter ones to it and pass lengths), or arrangement_options={'dimension_shuffle': False}"
        )
    steps = t if opts["dimension_shuffle"] else None
    rnn = Temporal(steps or f, config.hidden_size, config.rnn, config.num_layers, config.bidirectional, config.dropout)
    extra = sorted(set(config.head_options) - {"dropout"})
    if extra:
        raise ConfigError(
            f"the parallel arrangement's head takes head_options 'dropout' only (before its Linear), got {extra}"
        )
    out = ParallelHead(
        b.output_shape(feats)[-1], rnn.out_features, config.num_classes, pool=config.head,
        bidirectional=rnn.bidirectional, arm_dropout=opts["dropout"], steps=steps, **config.head_options,
    )  # fmt: skip
    return Parts(config, motion, cnn, b, rnn, out, feats[1:])


def _convlstm_parts(
    config: CNNLSTMConfig, motion: FrameDifference, cnn: nn.Module, feats: tuple, given: Bridge | None
) -> Parts:
    """backbone maps -> ConvLSTM -> bridge per step on its maps -> head, every size from ``feats``."""
    if len(feats) != 5:
        raise ShapeError(
            f"rnn='convlstm' wants the backbone's feature maps (N, T, C, H, W), but backbone {config.backbone!r} "
            f"gives {format_shape(feats)}: a sequence of features. {sequence_to_maps_rnn_fix(feats)}"
        )
    try:
        rnn = ConvLSTM(feats[2], config.hidden_size, num_layers=config.num_layers, dropout=config.dropout,
                       **config.rnn_options)  # fmt: skip
    except TypeError as e:
        raise ConfigError(
            f"rnn 'convlstm' does not take these rnn_options {sorted(config.rnn_options)} (it takes kernel_size, "
            f"bias): {e}"
        ) from None
    maps = rnn.output_shape(feats)  # (1, T, D, H', W')
    b = _bridge(config, maps, given, source="ConvLSTM")
    f = b.output_shape(maps)[-1]  # F: the head's input size
    out = head(config.head, f, config.num_classes, **config.head_options)
    return Parts(config, motion, cnn, b, rnn, out, feats[1:])


def _config(
    backbone: Any,
    bridge: Any,
    *,
    layout: str = CNNLSTMConfig.layout,
    input_shape: tuple = CNNLSTMConfig.input_shape,
    bn: str | None = None,
    backbone_options: dict[str, Any] | None = None,
    bridge_options: dict[str, Any] | None = None,
    rnn_options: dict[str, Any] | None = None,
    head_options: dict[str, Any] | None = None,
    arrangement_options: dict[str, Any] | None = None,
    **fields: Any,
) -> tuple[CNNLSTMConfig, Any]:
    """The config the arguments describe, defaults by layout filled in and checked; the backbone weights."""
    lay = L.parse(layout)
    kind = L.kind(lay)
    input_shape = _check_input_shape(input_shape, lay)
    backbone_options = dict(backbone_options or {})
    weights = backbone_options.pop("weights", None)  # loaded into the backbone, never saved in the config
    if bn is None:
        bn = "frozen" if weights is not None else "train"
    if bn not in BN_POLICIES:
        raise ConfigError(f"unknown BatchNorm policy bn={bn!r}: expected one of {', '.join(BN_POLICIES)}")
    if backbone is None:
        backbone = _DEFAULT_BACKBONE[kind]
    bridge = _DEFAULT_BRIDGE[kind] if bridge is None else bridge
    if not isinstance(bridge, str):
        bridge, bridge_options = _bridge_record(bridge)
    config = CNNLSTMConfig(
        backbone="custom" if isinstance(backbone, nn.Module) else backbone,
        backbone_options=backbone_options,
        bridge=bridge,
        bridge_options=dict(bridge_options or {}),
        rnn_options=dict(rnn_options or {}),
        head_options=dict(head_options or {}),
        arrangement_options=dict(arrangement_options or {}),
        input_shape=input_shape,
        layout=lay.value,
        bn=bn,
        **fields,
    )
    return config, weights


def _bridge_record(b: Bridge) -> tuple[str, dict[str, Any]]:
    """A bridge module's registered name and options, or ``"custom"`` when a config cannot rebuild it."""
    if b.name in BRIDGES and BRIDGES.get(b.name) is type(b):
        return b.name, b.options()
    return "custom", {}


def _check_input_shape(shape: Any, lay: L.Layout) -> tuple:
    try:
        shape = tuple(shape)
    except TypeError:
        raise ConfigError(f"input_shape must be a tuple like (16, 3, 112, 112), got {shape!r}") from None
    want = len(lay.value) - 1
    if len(shape) != want:
        axes = ", ".join(lay.value[1:])
        hint = " (one sample's shape, without N)" if len(shape) == want + 1 else ""
        raise ShapeError(f"input_shape for layout {lay.value} is ({axes}){hint}, got {shape}")
    canon = L.canonical_shape(shape, lay)
    may_vary = {0} if L.kind(lay) in ("clip", "series") else set()
    for i, s in enumerate(canon):
        if s is None and i in may_vary:
            continue
        if not isinstance(s, int) or isinstance(s, bool) or s < 1:
            axes = L.canonical(lay).value[1:]
            raise ShapeError(
                f"input_shape {shape}: {axes[i]} must be a positive int" + (" (only T may be None)" if may_vary else "")
            )
    return shape


def _backbone(config: CNNLSTMConfig, sample: tuple, given: nn.Module | None, weights: Any) -> nn.Module:
    """The backbone (time-distributed for clips) with the config's BatchNorm policy."""
    kind = L.kind(config.layout)
    channels = sample[L.channel_axis(config.layout)]
    options = {**config.backbone_options, **({"weights": weights} if weights is not None else {})}
    cnn = build_backbone(config.backbone if given is None else given, channels, **options)
    if config.bn == "frozen":
        freeze_batchnorm(cnn)
    return TimeDistributed(cnn, bn=config.bn, chunk_size=config.chunk_size) if kind == "clip" else cnn


def _feature_shape(backbone: nn.Module, config: CNNLSTMConfig, sample: tuple) -> tuple:
    """The backbone's output for one sample (N=1; T=None stays None), by a dry run on meta."""
    try:
        feats = infer(backbone, (1, *sample))
    except ShapeError as e:
        raise ShapeError(
            f"backbone {config.backbone!r} cannot take input_shape {config.input_shape} (layout {config.layout}): {e}"
            + _channels_last_hint(config)
        ) from None
    if not isinstance(feats, (torch.Size, tuple)) or not all(isinstance(s, int) or s is None for s in feats):
        raise ConfigError(f"backbone {config.backbone!r} must return one tensor, got shapes {feats}")
    return tuple(feats)


def _channels_last_hint(config: CNNLSTMConfig) -> str:
    """Where ``input_shape`` looks channels-last (C of 1 or 3 at the end, as Keras writes it) in a channels-first
    layout: the layout that reads it as given, or the shape in the layout asked for."""
    shape, lay = tuple(config.input_shape), config.layout
    other = {"NTCHW": "NTHWC", "NCHW": "NHWC"}.get(lay)
    if other is None or shape[-1] not in (1, 3) or shape[-3] in (1, 3):
        return ""
    moved = (*shape[:-3], shape[-1], *shape[-3:-1])
    return (
        f". input_shape {shape} looks channels-last ({', '.join(other[1:])}), as Keras writes it: build the model "
        f"with layout='{other}' (it permutes the input once), or give input_shape={moved}"
    )


def _bridge(config: CNNLSTMConfig, feats: tuple, given: Bridge | None, source: str | None = None) -> Bridge:
    """The bridge for feature maps of shape ``feats`` (from the backbone, or the ``source`` named), checked to
    take their axes."""
    in_axes = (given or BRIDGES.get(config.bridge)).in_axes
    if len(feats) != len(in_axes):
        kind = L.kind(config.layout)
        where = f"the {source}" if source else f"the {kind} backbone"
        after = f"after a {source}" if source else f"for a {kind}"
        raise ConfigError(
            f"bridge {config.bridge!r} takes ({', '.join(in_axes)}) but {where} gives "
            f"{format_shape(feats)}; {after} use bridge={_DEFAULT_BRIDGE[kind]!r}"
        )
    return given if given is not None else bridge(config.bridge, feature_shape=feats, **config.bridge_options)
