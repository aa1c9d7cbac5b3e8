"""``CNNLSTM``: backbone → bridge → LSTM/GRU → head (or backbone → ConvLSTM → bridge → head), every size
inferred, saved as safetensors + JSON."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import layout as L
from ._io import atomic_write
from .backbones import time_stride
from .build import build_cnnlstm
from .config import CNNLSTMConfig
from .errors import ConfigError, ShapeError
from .layers.bridges import Bridge
from .layers.time_distributed import freeze_batchnorm
from .lengths import check_lengths, pooled_lengths
from .precision import _CHOSEN, PRECISIONS, _autocast, bf16_supported, check_precision, resolve_precision
from .shapes import format_shape as _fmt
from .shapes import shape_guard
from .shapes.rules import takes_lengths

__all__ = ["CNNLSTM", "PRECISIONS", "CNNLSTMConfig", "bf16_supported", "check_precision", "resolve_precision"]


class CNNLSTM(nn.Module):
    """A CNN → LSTM/GRU (or ConvLSTM) model whose every size is inferred from one sample's shape.

    Args:
        backbone: ``"small"`` (clips, images), ``"conv1d"`` (series), ``"torchvision:NAME"``,
            ``"timm:NAME"``, or any ``nn.Module`` that maps ``(B, C, H, W)`` to feature maps
            (``(N, T, F)`` to ``(N, T, F')`` for series). Default by layout.
        bridge: ``"gap"`` (clips), ``"gmp"``, ``"grid"``, ``"flatten"``, ``"attention"``,
            ``"spatial"`` (images), ``"none"`` (series), or a :class:`~cnnlstm.Bridge`.
        rnn: ``"lstm"`` or ``"gru"``; or ``"convlstm"``: a :class:`~cnnlstm.ConvLSTM` over the backbone's
            maps ``(N, T, C', H', W')`` (its state is a map per frame), the bridge applied per step to its
            output maps ``(N, T, D, H', W')``, then the head. Clips only, one direction.
        hidden_size, num_layers, bidirectional, dropout: the RNN's (a ConvLSTM's ``hidden_size`` is the
            channels ``D`` of its state maps).
        head: ``"last"``, ``"mean"``, ``"attention"`` or ``"frames"`` (one output per step).
        num_classes: outputs of the head.
        input_shape: one sample's shape in ``layout``, without ``N``: ``(T, C, H, W)`` for
            ``NTCHW``, ``(T, H, W, C)`` for ``NTHWC``, ``(C, H, W)`` for ``NCHW``, ``(T, F)`` for
            ``NTF``. ``T`` may be None (any length).
        layout: the input's layout; the one permutation to the canonical layout happens at the entry.
        bn: BatchNorm policy of the backbone, ``"train"`` or ``"frozen"``; default ``"frozen"``
            when the backbone is loaded with weights, else ``"train"``.
        chunk_size: frames per backbone call at inference (None: all at once).
        motion: clips: ``"none"``, ``"diff"`` (each frame's difference from the one before, in place of the
            frame) or ``"stack"`` (frame and difference on the channel axis), in front of the backbone.
        backbone_options, bridge_options, head_options: passed to the part's builder.
        rnn_options: a ConvLSTM's own options: ``kernel_size`` (default 3), ``bias``.
        arrangement: ``"sequential"`` (the RNN reads the backbone's steps) or, for series, ``"parallel"``
            (LSTM-FCN: the RNN reads the raw series beside the backbone; the backbone's mean over valid steps and
            the RNN's ``head`` summary, ``"last"`` or ``"mean"``, are joined before one Linear).
        arrangement_options: the parallel arrangement's ``dimension_shuffle`` (the RNN reads ``F`` steps of ``T``
            features; ``T`` fixed) and ``dropout`` on the RNN arm (default 0.8, LSTM-FCN's).

    Shapes:
        x: ``(N, *input_shape)`` in ``layout``; lengths: optional ``(N,)`` valid steps of a
        padded batch. Returns logits ``(N, classes)``, or ``(N, T, classes)`` for ``head="frames"``.

    The arguments go through :func:`cnnlstm.build.build_cnnlstm`, which turns them into the parts
    (``backbone``, ``bridge``, ``rnn``, ``head``) this class runs. Inference in bfloat16 is chosen where
    it runs: ``with model.autocast("bf16"):``.

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
        motion: str = "none",
        backbone_options: dict[str, Any] | None = None,
        bridge_options: dict[str, Any] | None = None,
        head_options: dict[str, Any] | None = None,
        rnn_options: dict[str, Any] | None = None,
        arrangement: str = "sequential",
        arrangement_options: dict[str, Any] | None = None,
    ):
        super().__init__()
        parts = build_cnnlstm(  # names and numbers become parts in cnnlstm.build; this class works on the parts
            backbone,
            bridge,
            rnn=rnn,
            hidden_size=hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            head=head,
            num_classes=num_classes,
            input_shape=input_shape,
            layout=layout,
            bn=bn,
            chunk_size=chunk_size,
            motion=motion,
            backbone_options=backbone_options,
            bridge_options=bridge_options,
            head_options=head_options,
            rnn_options=rnn_options,
            arrangement=arrangement,
            arrangement_options=arrangement_options,
        )
        self.config = parts.config
        self.feature_shape = parts.feature_shape  # one sample's backbone output, e.g. (T, C', H', W')
        self.motion = parts.motion  # frame differences in front of the backbone (mode "none": the frames)
        self.backbone = parts.backbone
        self.bridge = parts.bridge
        self.rnn = parts.rnn
        self.head = parts.head

    @property
    def layout(self) -> L.Layout:
        """The layout of the input the model takes."""
        return L.parse(self.config.layout)

    @property
    def kind(self) -> str:
        """``"clip"``, ``"image"`` or ``"series"``: what the layout holds."""
        return L.kind(self.config.layout)

    @property
    def rnn_reads_maps(self) -> bool:
        """Whether the recurrent part reads the backbone's maps (a ConvLSTM, bridged after it) rather than the
        bridged sequence."""
        return bool(getattr(self.rnn, "reads_maps", False))

    @property
    def parallel(self) -> bool:
        """Whether the RNN runs beside the backbone on the raw series (LSTM-FCN) rather than after it."""
        return self.config.arrangement == "parallel"

    @property
    def fixed_steps(self) -> int | None:
        """The one ``T`` every input must have (a dimension-shuffled RNN arm reads ``T`` as its features), else None."""
        return getattr(self.head, "steps", None)

    @property
    def bn(self) -> str:
        """The backbone's BatchNorm policy, ``"train"`` or ``"frozen"``."""
        return self.config.bn

    # ------------------------------------------------------------------ running

    def autocast(self, precision: str = "bf16") -> contextlib.AbstractContextManager:
        """Run what the ``with`` block calls in ``precision``: ``"32"`` (float32), ``"bf16"`` (bfloat16) or
        ``"auto"`` (bfloat16 on a CPU that computes it natively, float32 elsewhere: :func:`resolve_precision`).

        Chosen where inference is called, never stored in the model: with ``"bf16"`` the convolutions,
        matrix products and the RNN run in bfloat16 (autocast on the model's device); outputs come back as
        float32, and a stream's carried state stays float32. ``"32"`` turns any outer autocast off (the
        exporters write float32 graphs inside it). Training picks its own (``precision="bf16"`` in
        :class:`~cnnlstm.tasks.options.TrainOptions`, Lightning's ``bf16-mixed``).

        >>> m = CNNLSTM(input_shape=(4, 3, 32, 32), hidden_size=8, backbone_options={"channels": (8,)}).eval()
        >>> with torch.inference_mode(), m.autocast("32"):
        ...     m(torch.zeros(1, 4, 3, 32, 32)).dtype
        torch.float32
        """
        device = next(self.parameters()).device.type
        if check_precision(precision) == "bf16" and device == "cpu" and not bf16_supported():
            warnings.warn(
                "this CPU has no native bfloat16 (AVX512-BF16/AMX): bf16 will be emulated and slower than float32",
                stacklevel=2,
            )
        return _autocast(resolve_precision(precision, device), device)

    def set_precision(self, precision: str) -> CNNLSTM:
        """Deprecated: choose the precision where inference runs, ``with model.autocast("bf16"):``.

        Kept for one release: the model's ``forward`` at inference (``model.eval()``) then autocasts as
        before, unless a ``with model.autocast(...)`` block chose otherwise (the exporters choose ``"32"``).
        Streaming does not read it.
        """
        warnings.warn(
            'CNNLSTM.set_precision is deprecated: run inference inside `with model.autocast("bf16"):`',
            DeprecationWarning,
            stacklevel=2,
        )
        check_precision(precision)
        self._set_precision = precision
        return self

    def _set_precision_autocast(self, x: torch.Tensor) -> contextlib.AbstractContextManager:
        """What the deprecated :meth:`set_precision` chose, at inference only; leaves with it."""
        chosen = self.__dict__.get("_set_precision")
        if chosen is None or self.training or _CHOSEN.get() is not None:
            return contextlib.nullcontext()
        return _autocast(chosen, x.device.type)

    def train(self, mode: bool = True) -> CNNLSTM:
        super().train(mode)
        if self.bn == "frozen":
            freeze_batchnorm(self.backbone)
        return self

    def _entry(self, x: torch.Tensor, lengths: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Check ``x`` against the config and permute it, once, into the canonical layout."""
        if not isinstance(x, torch.Tensor):
            hint = ": convert it with torch.from_numpy(x).float()" if type(x).__module__ == "numpy" else ""
            raise TypeError(f"CNNLSTM wants a torch tensor in layout {self.layout.value}, got {type(x).__name__}{hint}")
        if not (x.is_floating_point()):
            hint = ": frames are float, scaled and normalised as in training, e.g. x.float() / 255" if (
                x.dtype == torch.uint8) else ": convert it with x.float()"  # fmt: skip
            raise ShapeError(f"CNNLSTM wants a float tensor, got {x.dtype} {tuple(x.shape)}{hint}")
        if x.dim() == len(self.layout.value) - 1:
            raise ShapeError(
                f"CNNLSTM wants ({', '.join(self.layout.value)}), got {x.dim()}-D {tuple(x.shape)}: "
                "one sample without the batch axis. Add it: x.unsqueeze(0)."
            )
        raw = tuple(x.shape)
        x = L.to_canonical(x, self.layout)
        want = L.canonical_shape(self.config.input_shape, self.layout)
        got = tuple(x.shape[1:])
        ch_axis = L.channel_axis(self.layout)
        if got[ch_axis] != want[ch_axis]:
            raise ShapeError(self._channel_message(raw, want[ch_axis]))
        self.bridge.check_input(want, got)
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
        """What the recurrent part reads: the bridged sequence for an LSTM/GRU; for a ConvLSTM, which reads
        maps, the backbone's feature maps (the bridge comes after it). In the parallel arrangement, the CNN arm's
        steps (its RNN reads the raw series).

        Args:
            x: ``(N, *input_shape)`` in the model's layout.
            lengths: optional ``(N,)``.

        Returns:
            ``(N, T', F)``: ``T' = T`` except after a time-pooling backbone (``ceil(T / pool)``);
            ``rnn="convlstm"``: ``(N, T, C', H', W')``.
        """
        raw = tuple(x.shape) if isinstance(x, torch.Tensor) else ()
        x, lengths = self._entry(x, lengths)
        with shape_guard(self, raw, name="CNNLSTM"):
            return self._features(x, lengths)

    def _features(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        # a backbone whose forward takes lengths gets them (TimeDistributed skips padded frames, conv1d masks
        # padded steps); any other module is called on the tensor alone
        x = self.motion(x)  # clip: (N, T, C or 2C, H, W); unchanged for motion="none"
        maps = self.backbone(x, lengths) if takes_lengths(self.backbone) else self.backbone(x)
        # clip: (N, T, C', H', W'); image: (N, C', H', W'); series: (N, T', F')
        if self.rnn_reads_maps:
            return maps  # a ConvLSTM reads the maps; the bridge comes after it
        return self.bridge(maps)  # (N, T', F)

    def forward(self, x: torch.Tensor, lengths: Any = None) -> torch.Tensor:
        """Args: x ``(N, *input_shape)`` in the model's layout; lengths ``(N,)``.
        Returns ``(N, classes)`` or ``(N, T, classes)``; float32 under a bf16 :meth:`autocast` too."""
        raw = tuple(x.shape) if isinstance(x, torch.Tensor) else ()
        x, lengths = self._entry(x, lengths)
        with shape_guard(self, raw, name="CNNLSTM"), self._set_precision_autocast(x):
            seq = self._features(x, lengths)  # (N, T', F); T' = ceil(T / stride) for a time-pooling backbone
            if self.parallel:
                return self._beside(x, lengths, seq)
            lengths = pooled_lengths(lengths, time_stride(self.backbone))
            states, _ = self.rnn(seq, lengths)  # (N, T', D*dirs)
            if self.rnn_reads_maps:  # the ConvLSTM read the maps (N, T, C', H', W') and gave (N, T, D, H', W')
                states = self.bridge(states)  # (N, T, F)
            out = self.head(states, lengths)
        return out.float() if out.dtype == torch.bfloat16 else out

    def _beside(self, x: torch.Tensor, lengths: torch.Tensor | None, seq: torch.Tensor) -> torch.Tensor:
        """The parallel arrangement: the RNN arm over the raw series ``x`` ``(N, T, F)`` (or its dimension shuffle),
        beside the CNN arm's steps ``seq`` ``(N, T', C)``; returns ``(N, classes)``."""
        arm, arm_lengths = self.head.arm_input(x, lengths)  # (N, T, F), or (N, F, T) shuffled
        states, _ = self.rnn(arm, arm_lengths)  # (N, S, D*dirs)
        out = self.head(seq, pooled_lengths(lengths, time_stride(self.backbone)), states, arm_lengths)
        return out.float() if out.dtype == torch.bfloat16 else out

    def stream(self):
        """A :class:`~cnnlstm.streaming.Streamer`: frame-by-frame inference with the RNN state carried.

        Raises:
            ConfigError: the model cannot stream (bidirectional RNN, a ``mean``/``attention`` head,
                a non-causal series backbone, the parallel arrangement), with what to change.
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
        return cls(**{**cfg.to_dict(), **overrides})

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides) -> CNNLSTM:
        """Load a model written by :meth:`save_pretrained` (safetensors: no code runs on load)."""
        from safetensors.torch import load_file

        d = Path(directory)
        for name in ("config.json", "model.safetensors"):
            if not (d / name).is_file():
                raise ConfigError(f"{str(d)!r} is not a saved CNNLSTM: {name} is missing")
        if (d / "ensemble.json").is_file():
            raise ConfigError(
                f"{str(d)!r} holds an ensemble of models: load it with cnnlstm.load_run({str(d)!r}) or "
                "cnnlstm.ensemble.load_model"
            )
        model = cls.from_config(CNNLSTMConfig.from_json((d / "config.json").read_text()), **overrides)
        model.load_state_dict(load_file(str(d / "model.safetensors")))
        return model
