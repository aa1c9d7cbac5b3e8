"""Frame-by-frame inference that carries the recurrent state instead of recomputing a window.

>>> import torch, cnnlstm as cl
>>> model = cl.CNNLSTM(input_shape=(None, 3, 32, 32), num_classes=4, hidden_size=16,
...                    backbone_options={"channels": (8, 16)})
>>> s = model.stream()
>>> s.step(torch.zeros(2, 3, 32, 32)).shape   # 2 streams, one frame each
torch.Size([2, 4])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from . import layout as L
from .errors import ConfigError, ShapeError

__all__ = ["Streamer", "check_streamable"]

_FRAME_LAYOUT = {"NTCHW": "NCHW", "NCTHW": "NCHW", "NTHWC": "NHWC", "NTF": "NF", "NFT": "NF"}


def check_streamable(model: nn.Module) -> None:
    """Raise :class:`ConfigError` saying why a model cannot stream, and what to change."""
    cfg = model.config
    if model.kind == "image":
        raise ConfigError(
            "an image model reads one image's positions as its sequence; it has no frames to stream: build a clip "
            "model (layout='NTCHW' with a time axis in input_shape) to stream frames"
        )
    if cfg.bidirectional:
        raise ConfigError(
            "a bidirectional RNN reads each clip backwards from its end, so no output exists before the last "
            "frame: build the model with bidirectional=False to stream"
        )
    if not model.head.causal:
        raise ConfigError(
            f"head={cfg.head!r} pools over the whole clip, so it changes with every later frame: "
            "use head='last' (the clip's label so far) or head='frames' (one output per frame) to stream"
        )
    if model.kind == "series" and not getattr(model.backbone, "causal", False):
        raise ConfigError(
            "this series model's conv1d backbone looks at future steps: build it with "
            "backbone_options={'causal': True} to stream"
        )
    if model.kind == "series" and getattr(model.backbone, "time_stride", 1) > 1:
        raise ConfigError(
            f"this series model pools time by {model.backbone.time_stride} before its RNN, so one new step is not "
            "one RNN step: build it with backbone_options={'pool': 1} to stream"
        )


class Streamer:
    """Feeds one frame of each of ``N`` streams at a time through a causal :class:`CNNLSTM`.

    Each :meth:`step` runs the per-frame CNN and the bridge once and the RNN one step; the
    RNN state is carried between steps (per stream). Outputs equal the model's full-clip
    forward on the frames so far: the clip logits so far for ``head="last"``, the step's
    logits for ``head="frames"``.

    Args:
        model: a unidirectional model with head ``last`` or ``frames`` (put in eval mode).

    Shapes:
        frames: ``(N, C, H, W)`` (or ``(N, H, W, C)`` for an ``NTHWC`` model; ``(N, F)`` for series).
        returns: ``(N, classes)``.
    """

    def __init__(self, model: nn.Module):  # a CNNLSTM (not imported: the model imports this module)
        check_streamable(model)
        self.model = model.eval()
        self.frame_layout = _FRAME_LAYOUT[model.layout.value]
        self.cnn = model.backbone.module if model.kind == "clip" else model.backbone
        self.state: tuple[torch.Tensor, ...] | None = None
        self.steps = 0
        self._caches: list[torch.Tensor] | None = None  # series: each causal conv's previous inputs

    @property
    def rnn(self) -> nn.RNNBase:
        return self.model.rnn.rnn

    def _frame_to_canonical(self, frames: torch.Tensor) -> torch.Tensor:
        want = len(self.frame_layout)
        if frames.dim() != want:
            hint = " (one frame per stream, without the time axis)"
            if frames.dim() == want - 1:
                hint = ": add the stream axis, frames.unsqueeze(0), for a single stream"
            axes = ", ".join(self.frame_layout)
            raise ShapeError(f"Streamer.step wants ({axes}), got {frames.dim()}-D {tuple(frames.shape)}{hint}")
        if self.frame_layout == "NHWC":
            frames = frames.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        sample = L.canonical_shape(self.model.config.input_shape, self.model.layout)
        c = sample[1]
        if frames.shape[1] != c:
            raise ShapeError(
                f"Streamer.step wants frames with {c} channels/features on axis 1 of ({', '.join(self.frame_layout)}), "
                f"got {tuple(frames.shape)}"
            )
        if self.model.config.bridge == "flatten" and tuple(frames.shape[-2:]) != tuple(sample[-2:]):
            raise ShapeError(
                f"Streamer.step: this model (bridge='flatten') was built for frames of H, W = {tuple(sample[-2:])}, "
                f"got {tuple(frames.shape[-2:])}"
            )
        if self.state is not None and frames.shape[0] != self.batch:
            raise ShapeError(
                f"Streamer.step: the stream has {self.batch} streams, got a batch of {frames.shape[0]} frames; "
                "reset() to start over with another number of streams"
            )
        return frames

    @property
    def batch(self) -> int:
        return 0 if self.state is None else self.state[0].shape[1]

    def _features(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) → (N, 1, F)``: one step of the bridged sequence."""
        if self.model.kind == "series":
            y, self._caches = self.model.backbone.step(frames, self._caches)  # (N, F')
            return y.unsqueeze(1)  # (N, 1, F')
        maps = self.cnn(frames)  # (N, C', H', W')
        return self.model.bridge(maps.unsqueeze(1))  # (N, 1, F)

    @torch.inference_mode()
    def step(self, frames: torch.Tensor) -> torch.Tensor:
        """Feed the next frame of every stream; returns the output for this step, ``(N, classes)``."""
        frames = self._frame_to_canonical(frames)
        with self.model._autocast(frames):
            seq = self._features(frames)  # (N, 1, F)
            state = self.state
            if state is not None and isinstance(self.rnn, nn.GRU):
                state = state[0]
            out, new = self.rnn(seq, state)  # (N, 1, D)
            logits = self.model.head(out)  # (N, classes) last; (N, 1, classes) frames; (N, horizon, k) forecast
        # the carried state stays float32 (under bf16 the RNN hands back bfloat16)
        self.state = tuple(h.float() for h in new) if isinstance(new, tuple) else (new.float(),)
        self.steps += 1
        logits = logits.float()
        return logits[:, 0] if self.model.head.per_step else logits

    def reset(self, streams: Sequence[int] | torch.Tensor | None = None) -> None:
        """Start over: all streams (None), or only those listed, while the others go on."""
        if streams is None:
            self.state, self._caches, self.steps = None, None, 0
            return
        if self.state is None:
            return
        idx = torch.as_tensor(streams, dtype=torch.long)
        # out of place: the state was made under inference mode; a zero state is the RNN's own initial state,
        # and zero caches are the causal convolutions' own padding
        self.state = tuple(s.index_fill(1, idx, 0) for s in self.state)  # (layers, N, D)
        if self._caches is not None:
            self._caches = [c.index_fill(0, idx, 0) for c in self._caches]

    def get_state(self) -> dict[str, torch.Tensor]:
        """The carried state, for a server that keeps many streams: ``{"h": (layers, N, D)[, "c": ...]}``."""
        if self.state is None:
            return {}
        names = ("h", "c")
        out = {n: s.clone() for n, s in zip(names, self.state)}
        for i, c in enumerate(self._caches or []):
            out[f"conv{i}"] = c.clone()
        return out

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a state from :meth:`get_state` (an empty dict starts over)."""
        if not state:
            self.reset()
            return
        parts = [state["h"]] + ([state["c"]] if "c" in state else [])
        d = self.rnn.hidden_size
        for p in parts:
            if p.dim() != 3 or p.shape[0] != self.rnn.num_layers or p.shape[2] != d:
                raise ShapeError(f"a stream state is (layers={self.rnn.num_layers}, N, D={d}), got {tuple(p.shape)}")
        if isinstance(self.rnn, nn.LSTM) and len(parts) != 2:
            raise ShapeError("an LSTM's state needs both 'h' and 'c'")
        self.state = tuple(p.clone() for p in parts)
        convs = sorted((k for k in state if k.startswith("conv")), key=lambda k: int(k[4:]))
        self._caches = [state[k].clone() for k in convs] or None
