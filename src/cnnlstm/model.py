"""``CNNLSTM``: backbone → bridge → LSTM/GRU → head, every size inferred, saved as safetensors + JSON."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import layout as L
from ._io import atomic_write
from .backbones import build_backbone
from .errors import ConfigError, ShapeError
from .layers.bridges import BRIDGES, Bridge
from .layers.bridges import bridge as make_bridge
from .layers.temporal import Temporal
from .layers.temporal import head as make_head
from .layers.time_distributed import BN_POLICIES, TimeDistributed, freeze_batchnorm
from .lengths import check_lengths
from .shapes import format_shape as _fmt
from .shapes import infer, shape_guard

__all__ = ["CNNLSTM", "PRECISIONS", "CNNLSTMConfig", "bf16_supported"]

PRECISIONS = ("32", "bf16")


def bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


_DEFAULT_BRIDGE = {"clip": "gap", "image": "spatial", "series": "none"}
_DEFAULT_BACKBONE = {"clip": "small", "image": "small", "series": "conv1d"}


@dataclass
class CNNLSTMConfig:
    """Everything needed to rebuild a :class:`CNNLSTM`; saved as ``config.json`` beside the weights."""

    backbone: str | None = None
    backbone_options: dict[str, Any] = field(default_factory=dict)
    bridge: str | None = None
    bridge_options: dict[str, Any] = field(default_factory=dict)
    rnn: str = "lstm"
    hidden_size: int = 256
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    head: str = "last"
    head_options: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 10
    input_shape: tuple = (16, 3, 112, 112)
    layout: str = "NTCHW"
    bn: str | None = None
    chunk_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CNNLSTMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown CNNLSTM config keys {unknown}: expected some of {sorted(known)}")
        d = dict(d)
        if "input_shape" in d:
            d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> CNNLSTMConfig:
        return cls.from_dict(json.loads(text))


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


class CNNLSTM(nn.Module):
    """A CNN → LSTM/GRU model whose every size is inferred from one sample's shape.

    Args:
        backbone: ``"small"`` (clips, images), ``"conv1d"`` (series), ``"torchvision:NAME"``,
            ``"timm:NAME"``, or any ``nn.Module`` that maps ``(B, C, H, W)`` to feature maps
            (``(N, T, F)`` to ``(N, T, F')`` for series). Default by layout.
        bridge: ``"gap"`` (clips), ``"gmp"``, ``"grid"``, ``"flatten"``, ``"attention"``,
            ``"spatial"`` (images), ``"none"`` (series), or a :class:`~cnnlstm.Bridge`.
        rnn: ``"lstm"`` or ``"gru"``.
        hidden_size, num_layers, bidirectional, dropout: the RNN's.
        head: ``"last"``, ``"mean"``, ``"attention"`` or ``"frames"`` (one output per step).
        num_classes: outputs of the head.
        input_shape: one sample's shape in ``layout``, without ``N``: ``(T, C, H, W)`` for
            ``NTCHW``, ``(T, H, W, C)`` for ``NTHWC``, ``(C, H, W)`` for ``NCHW``, ``(T, F)`` for
            ``NTF``. ``T`` may be None (any length).
        layout: the input's layout; the one permutation to the canonical layout happens at the entry.
        bn: BatchNorm policy of the backbone, ``"train"`` or ``"frozen"``; default ``"frozen"``
            when the backbone is loaded with weights, else ``"train"``.
        chunk_size: frames per backbone call at inference (None: all at once).
        backbone_options, bridge_options, head_options: passed to the part's builder.

    Shapes:
        x: ``(N, *input_shape)`` in ``layout``; lengths: optional ``(N,)`` valid steps of a
        padded batch. Returns logits ``(N, classes)``, or ``(N, T, classes)`` for ``head="frames"``.

    >>> m = CNNLSTM(input_shape=(8, 3, 32, 32), hidden_size=32, num_classes=5, backbone_options={"channels": (8, 16)})
    >>> m(torch.zeros(2, 8, 3, 32, 32)).shape
    torch.Size([2, 5])
    """

    def __init__(
        self,
        backbone: str | nn.Module | None = None,
        bridge: str | Bridge | None = None,
        *,
        rnn: str = "lstm",
        hidden_size: int = 256,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        head: str = "last",
        num_classes: int = 10,
        input_shape: tuple = (16, 3, 112, 112),
        layout: str = "NTCHW",
        bn: str | None = None,
        chunk_size: int | None = None,
        backbone_options: dict[str, Any] | None = None,
        bridge_options: dict[str, Any] | None = None,
        head_options: dict[str, Any] | None = None,
    ):
        super().__init__()
        lay = L.parse(layout)
        kind = L.kind(lay)
        input_shape = _check_input_shape(input_shape, lay)
        backbone = _DEFAULT_BACKBONE[kind] if backbone is None else backbone
        bridge = _DEFAULT_BRIDGE[kind] if bridge is None else bridge
        backbone_options = dict(backbone_options or {})
        if bn is None:
            bn = "frozen" if backbone_options.get("weights") is not None else "train"
        if bn not in BN_POLICIES:
            raise ConfigError(f"unknown BatchNorm policy bn={bn!r}: expected one of {', '.join(BN_POLICIES)}")
        self.config = CNNLSTMConfig(
            backbone=backbone if isinstance(backbone, str) else "custom",
            backbone_options={k: v for k, v in backbone_options.items() if k != "weights"},
            bridge=bridge if isinstance(bridge, str) else _bridge_name(bridge),
            bridge_options=dict(bridge_options or {}) if isinstance(bridge, str) else _bridge_options(bridge),
            rnn=rnn,
            hidden_size=hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            head=head,
            head_options=dict(head_options or {}),
            num_classes=num_classes,
            input_shape=input_shape,
            layout=lay.value,
            bn=bn,
            chunk_size=chunk_size,
        )
        self.kind = kind
        self.layout = lay
        self.precision = "32"
        sample = L.canonical_shape(input_shape, lay)  # (T, C, H, W) | (C, H, W) | (T, F)
        channels = sample[1] if kind in ("clip", "series") else sample[0]
        cnn = build_backbone(backbone, channels, **backbone_options)
        self.backbone = TimeDistributed(cnn, bn=bn, chunk_size=chunk_size) if kind == "clip" else cnn
        # a backbone whose forward takes lengths gets them (TimeDistributed skips padded frames, conv1d masks
        # padded steps); any other module is called on the tensor alone
        self._backbone_lengths = "lengths" in inspect.signature(self.backbone.forward).parameters
        self.bn = bn
        if bn == "frozen":
            freeze_batchnorm(cnn)

        # dry run on meta: the backbone's output for one sample (N=1; T=None stays None)
        probe = (1, *sample)
        try:
            feats = infer(self.backbone, probe)
        except ShapeError as e:
            raise ShapeError(
                f"backbone {self.config.backbone!r} cannot take input_shape {input_shape} (layout {lay.value}): {e}"
            ) from None
        if not isinstance(feats, (torch.Size, tuple)) or not all(isinstance(s, int) or s is None for s in feats):
            raise ConfigError(f"backbone {self.config.backbone!r} must return one tensor, got shapes {feats}")
        self.feature_shape = tuple(feats[1:])  # one sample's backbone output, e.g. (T, C', H', W')

        if isinstance(bridge, str):
            opts = dict(self.config.bridge_options)
            if bridge == "attention":
                opts.setdefault("channels", feats[-3] if len(feats) >= 3 else feats[-1])
            bridge = make_bridge(bridge, **opts)
        if len(feats) != len(bridge.in_axes):
            raise ConfigError(
                f"bridge {self.config.bridge!r} takes ({', '.join(bridge.in_axes)}) but the {kind} backbone gives "
                f"{_fmt(feats)}; for a {kind} use bridge={_DEFAULT_BRIDGE[kind]!r}"
            )
        self.bridge = bridge
        if getattr(self.backbone, "time_stride", 1) > 1 and head == "frames":
            raise ConfigError(
                f"head='frames' gives one output per step, but the backbone pools time by "
                f"{self.backbone.time_stride}: use backbone_options={{'pool': 1}}, or a head over the whole "
                "sequence (last, mean, attention)"
            )
        seq = bridge.output_shape(tuple(feats))  # (1, T', F)
        self.rnn = Temporal(seq[-1], hidden_size, rnn, num_layers, bidirectional, dropout)
        self.head = make_head(
            head, self.rnn.out_features, num_classes, bidirectional=bidirectional, **self.config.head_options
        )

    # ------------------------------------------------------------------ running

    def set_precision(self, precision: str) -> CNNLSTM:
        """Inference precision: ``"32"`` (float32, the default) or ``"bf16"`` (opt-in, bfloat16 autocast).

        With ``"bf16"``, convolutions, matrix products and the RNN run in bfloat16 at inference
        (``model.eval()``); outputs come back as float32. Training keeps float32 unless it runs
        under its own autocast (``cnnlstm train --precision bf16-mixed``). Not saved with the model.
        """
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        if precision == "bf16" and not bf16_supported():
            warnings.warn(
                "this CPU has no native bfloat16 (AVX512-BF16/AMX): bf16 will be emulated and slower than float32",
                stacklevel=2,
            )
        self.precision = precision
        return self

    def _autocast(self, x: torch.Tensor) -> contextlib.AbstractContextManager:
        """bfloat16 autocast for ``precision="bf16"`` at inference; a no-op otherwise."""
        if self.precision == "bf16" and not self.training:
            return torch.autocast(x.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train(self, mode: bool = True) -> CNNLSTM:
        super().train(mode)
        if self.bn == "frozen":
            freeze_batchnorm(self.backbone)
        return self

    def _entry(self, x: torch.Tensor, lengths: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Check ``x`` against the config and permute it, once, into the canonical layout."""
        if not isinstance(x, torch.Tensor):
            raise ShapeError(f"CNNLSTM wants a tensor in layout {self.layout.value}, got {type(x).__name__}")
        if x.dim() == len(self.layout.value) - 1:
            raise ShapeError(
                f"CNNLSTM wants ({', '.join(self.layout.value)}), got {x.dim()}-D {tuple(x.shape)}: "
                "one sample without the batch axis. Add it: x.unsqueeze(0)."
            )
        raw = tuple(x.shape)
        x = L.to_canonical(x, self.layout)
        want = L.canonical_shape(self.config.input_shape, self.layout)
        got = tuple(x.shape[1:])
        ch_axis = 1 if self.kind in ("clip", "series") else 0
        if got[ch_axis] != want[ch_axis]:
            raise ShapeError(self._channel_message(raw, want[ch_axis]))
        if self.config.bridge == "flatten" and got[-2:] != want[-2:]:
            raise ShapeError(
                f"CNNLSTM with bridge='flatten' was built for frames of H, W = {want[-2:]}, got {got[-2:]}: "
                "flatten fixes the frame size; resize the frames or use bridge='grid'/'gap'"
            )
        if lengths is not None:
            if self.kind == "image":
                raise ShapeError("CNNLSTM on images takes no lengths: every image gives H*W steps")
            lengths = check_lengths(lengths, x.shape[0], x.shape[1], "CNNLSTM")
        return x, lengths

    def _channel_message(self, raw: tuple, want: int) -> str:
        name = "F" if self.kind == "series" else "C"
        letters = self.layout.value
        axis = letters.index(name)
        msg = (
            f"CNNLSTM (layout {letters}) wants {name}={want} on axis {axis} of ({', '.join(letters)}), "
            f"got {_fmt(raw)} with {name}={raw[axis]}"
        )
        if self.kind == "series" and raw[1] == want:
            return (
                msg + ": the series looks like (N, F, T). Build the model with layout='NFT' or pass x.transpose(1, 2)"
            )
        if self.kind == "series":
            return msg + f": feed series of {want} features or build the model with input_shape=(T, {raw[axis]})"
        for other in ("NTCHW", "NTHWC", "NCTHW") if self.kind == "clip" else ("NCHW", "NHWC"):
            if other != letters and raw[other.index("C")] == want:
                perm = L.permutation(other, letters)
                return msg + (
                    f": the input looks like {other}. Build the model with layout='{other}', "
                    f"or permute it: x.permute{perm}"
                )
        return msg + f": feed {want}-channel frames or build the model with that many channels in input_shape"

    def features(self, x: torch.Tensor, lengths: Any = None) -> torch.Tensor:
        """The bridged sequence the RNN reads.

        Args:
            x: ``(N, *input_shape)`` in the model's layout.
            lengths: optional ``(N,)``.

        Returns:
            ``(N, T', F)``: ``T' = T`` except after a time-pooling backbone (``ceil(T / pool)``).
        """
        raw = tuple(x.shape) if isinstance(x, torch.Tensor) else ()
        x, lengths = self._entry(x, lengths)
        with shape_guard(self, raw, name="CNNLSTM"):
            return self._features(x, lengths)

    def _features(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        # clip: (N, T, C', H', W'); image: (N, C', H', W'); series: (N, T, F')
        maps = self.backbone(x, lengths) if self._backbone_lengths else self.backbone(x)
        return self.bridge(maps)  # (N, T, F)

    def forward(self, x: torch.Tensor, lengths: Any = None) -> torch.Tensor:
        """Args: x ``(N, *input_shape)`` in the model's layout; lengths ``(N,)``.
        Returns ``(N, classes)`` or ``(N, T, classes)``."""
        raw = tuple(x.shape) if isinstance(x, torch.Tensor) else ()
        x, lengths = self._entry(x, lengths)
        with shape_guard(self, raw, name="CNNLSTM"), self._autocast(x):
            seq = self._features(x, lengths)  # (N, T', F); T' = ceil(T / stride) for a time-pooling backbone
            stride = getattr(self.backbone, "time_stride", 1)
            if lengths is not None and stride > 1:
                lengths = torch.div(lengths + stride - 1, stride, rounding_mode="floor")
            states, _ = self.rnn(seq, lengths)  # (N, T', D*dirs)
            out = self.head(states, lengths)
        return out.float() if out.dtype == torch.bfloat16 else out

    def stream(self):
        """A :class:`~cnnlstm.streaming.Streamer`: frame-by-frame inference with the RNN state carried.

        Raises:
            ConfigError: the model cannot stream (bidirectional RNN, a ``mean``/``attention`` head,
                a non-causal series backbone), with what to change.
        """
        from .streaming import Streamer

        return Streamer(self)

    # ------------------------------------------------------------------ saving

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory`` (each file atomically).

        Returns:
            The directory.
        """
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(d / "model.safetensors", lambda p: save_file(state, p, metadata={"format": "pt"}))
        atomic_write(d / "config.json", lambda p: Path(p).write_text(self.config.to_json() + "\n"))
        return d

    @classmethod
    def from_config(cls, config: CNNLSTMConfig | dict, **overrides) -> CNNLSTM:
        """Build a fresh model from a config (``overrides`` replace fields, e.g. ``backbone=module``)."""
        cfg = config if isinstance(config, CNNLSTMConfig) else CNNLSTMConfig.from_dict(config)
        kw = cfg.to_dict()
        kw.update(overrides)
        for part in ("backbone", "bridge"):
            if kw[part] == "custom" and part not in overrides:
                raise ConfigError(
                    f"this model was built with a custom {part} module, which a config cannot rebuild: "
                    f"pass it again, e.g. CNNLSTM.from_pretrained(dir, {part}=my_{part})"
                )
        return cls(kw.pop("backbone"), kw.pop("bridge"), **kw)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides) -> CNNLSTM:
        """Load a model written by :meth:`save_pretrained` (safetensors: no code runs on load)."""
        from safetensors.torch import load_file

        d = Path(directory)
        for name in ("config.json", "model.safetensors"):
            if not (d / name).is_file():
                raise ConfigError(f"{str(d)!r} is not a saved CNNLSTM: {name} is missing")
        model = cls.from_config(CNNLSTMConfig.from_json((d / "config.json").read_text()), **overrides)
        model.load_state_dict(load_file(str(d / "model.safetensors")))
        return model


def _bridge_name(b: Bridge) -> str:
    """The registered name of a bridge instance, or ``"custom"`` when a config cannot rebuild it."""
    return b.name if b.name in BRIDGES and BRIDGES.get(b.name) is type(b) else "custom"


def _bridge_options(b: Bridge) -> dict[str, Any]:
    return b.options() if _bridge_name(b) != "custom" else {}
