"""Frame-by-frame inference that carries the recurrent state instead of recomputing a window.

:class:`StepGraph` is the one implementation of a step (frame → backbone → bridge → RNN one step →
head; with a ConvLSTM, frame → backbone → ConvLSTM one step → bridge → head): :class:`Streamer` runs it
and holds the state between steps, and the exporters trace it.

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
from .backbones import time_stride
from .errors import ConfigError, ShapeError

__all__ = ["StepGraph", "Streamer", "check_streamable"]


def check_streamable(model: nn.Module) -> None:
    """Raise :class:`ConfigError` saying why a model cannot stream, and what to change."""
    cfg = model.config
    if model.kind == "image":
        raise ConfigError(
            "an image model reads one image's positions as its sequence; it has no frames to stream: build a clip "
            "model (layout='NTCHW' with a time axis in input_shape) to stream frames"
        )
    if getattr(model, "parallel", False):
        shuffle = " and its RNN arm reads each series' time steps as features (dimension_shuffle)" if (
            cfg.arrangement_options.get("dimension_shuffle")) else ""  # fmt: skip
        raise ConfigError(
            "arrangement='parallel' (LSTM-FCN) cannot stream: its CNN arm averages over the whole series, so its "
            f"output changes with every later step{shuffle}. To stream, build a sequential model (the RNN after "
            "the CNN) with a causal backbone: arrangement='sequential', backbone='conv1d', "
            "backbone_options={'causal': True}"
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
        fix = "build it with backbone_options={'causal': True} to stream"
        if cfg.backbone != "conv1d":  # fcn, resnet1d, inception1d: 'same' padding, no causal form
            fix = "only a causal conv1d streams: build it with backbone='conv1d', backbone_options={'causal': True}"
        raise ConfigError(f"this series model's {cfg.backbone} backbone looks at future steps: {fix}")
    if model.kind == "series" and time_stride(model.backbone) > 1:
        raise ConfigError(
            f"this series model pools time by {time_stride(model.backbone)} before its RNN, so one new step is not "
            "one RNN step: build it with backbone_options={'pool': 1} to stream"
        )


class StepGraph(nn.Module):
    """One streaming step of a causal :class:`~cnnlstm.CNNLSTM`: frame → backbone → bridge → RNN → head.

    :meth:`step` is the step itself, on canonical frames with the state carried so far (what
    :class:`Streamer` runs); ``forward(frame, h[, c])`` is the same step as a pure function of explicit
    tensors for a clip model (what the exporters trace).

    Shapes: frame ``(N, C, H, W)`` in the model's frame layout (``(N, H, W, C)`` for ``NTHWC``);
    h, c ``(layers, N, D)``, a ConvLSTM's maps ``(layers, N, D, H', W')``; logits ``(N, classes)``.
    """

    def __init__(self, model: nn.Module):  # a CNNLSTM (not imported: the model imports this module)
        super().__init__()
        check_streamable(model)
        self.layout = model.layout
        self.motion = model.motion  # frame differences: the step needs the stream's previous frame
        self.backbone = model.backbone  # TimeDistributed (a CNN per frame) or a causal conv1d stack
        self.bridge = model.bridge
        self.reads_maps = bool(getattr(model.rnn, "reads_maps", False))  # a ConvLSTM, bridged after it
        self.rnn = model.rnn if self.reads_maps else model.rnn.rnn
        self.head = model.head

    def step(
        self,
        frame: torch.Tensor,
        state: tuple[torch.Tensor, ...] | None = None,
        caches: list | None = None,
        previous: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], list | None]:
        """Args: frame ``(N, C, H, W)`` or ``(N, F)`` (canonical); state ``(h[, c])``, each ``(layers, N, D)``
        (a ConvLSTM's ``(h, c)`` each ``(layers, N, D, H', W')``), None for a fresh stream; caches: what the
        backbone carries (a causal conv1d's last inputs), or None; previous: the stream's frame before this one,
        for a model with motion input (None at the start).

        Returns: the outputs ``(N, classes)`` (``(N, horizon, targets)`` for a forecast head), the new
        state and the new caches.
        """
        frame = self.motion.step(frame, previous)  # (N, C or 2C, H, W); the frame itself without motion input
        maps, caches = self.backbone.step(frame, caches)  # (N, C', H', W') | (N, F')
        if self.reads_maps:  # the ConvLSTM steps on the maps, the bridge reads its output maps
            out, new = self.rnn.step(maps, state)  # (N, D, H', W'), (h, c)
            logits = self.head(self.bridge(out.unsqueeze(1)))  # (N, 1, F) -> (N, classes) | (N, 1, classes)
            return (logits[:, 0] if self.head.per_step else logits), new, caches
        seq = self.bridge(maps.unsqueeze(1))  # (N, 1, F)
        lstm = isinstance(self.rnn, nn.LSTM)
        out, new = self.rnn(seq, state if lstm or state is None else state[0])  # (N, 1, D)
        logits = self.head(out)  # (N, classes) last; (N, 1, classes) frames; (N, horizon, k) forecast
        return (logits[:, 0] if self.head.per_step else logits), (new if lstm else (new,)), caches

    def forward(self, frame: torch.Tensor, *carried: torch.Tensor):
        """Args: frame in the model's frame layout; then ``h`` (and ``c`` for an LSTM or ConvLSTM), and for a model
        with motion input ``previous``, the stream's last frame (at a stream's start, the frame itself).

        Returns: ``(logits, h[, c][, previous])``, the last being this frame (the next step's ``previous``).
        """
        previous = None
        if self.motion.mode != "none":
            *carried, previous = carried
            previous = L.frame_to_canonical(previous, self.layout)
        logits, state, caches = self.step(L.frame_to_canonical(frame, self.layout), tuple(carried), None, previous)
        if caches is not None:  # a causal conv1d's last inputs, which h and c do not carry
            raise ConfigError("forward carries the RNN state only; this backbone carries more: use step()")
        return (logits, *state, *([frame] if previous is not None else []))


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
        self.graph = StepGraph(model.eval())
        self.model = model
        self.frame_layout = L.frame_layout(model.layout)
        self.state: tuple[torch.Tensor, ...] | None = None
        self.steps = 0
        self._caches: list[torch.Tensor] | None = None  # series: each causal conv's previous inputs
        self._previous: torch.Tensor | None = None  # motion input: each stream's last frame
        self._restart: torch.Tensor | None = None  # motion input: streams reset since the last step

    @property
    def rnn(self) -> nn.Module:
        """The recurrent layer that steps: an ``nn.LSTM``/``nn.GRU``, or a :class:`~cnnlstm.ConvLSTM`."""
        return self.graph.rnn

    def _frame_to_canonical(self, frames: torch.Tensor) -> torch.Tensor:
        want = len(self.frame_layout)
        if frames.dim() != want:
            hint = " (one frame per stream, without the time axis)"
            if frames.dim() == want - 1:
                hint = ": add the stream axis, frames.unsqueeze(0), for a single stream"
            axes = ", ".join(self.frame_layout)
            raise ShapeError(f"Streamer.step wants ({axes}), got {frames.dim()}-D {tuple(frames.shape)}{hint}")
        frames = L.frame_to_canonical(frames, self.model.layout)  # (N, C, H, W) | (N, F)
        sample = L.canonical_shape(self.model.config.input_shape, self.model.layout)  # (T, C, H, W) | (T, F)
        c = sample[1]
        if frames.shape[1] != c:
            raise ShapeError(
                f"Streamer.step wants frames with {c} channels/features on axis 1 of ({', '.join(self.frame_layout)}), "
                f"got {tuple(frames.shape)}"
            )
        self.model.bridge.check_input(sample, tuple(frames.shape[1:]))
        if self.state is not None and frames.shape[0] != self.batch:
            raise ShapeError(
                f"Streamer.step: the stream has {self.batch} streams, got a batch of {frames.shape[0]} frames; "
                "reset() to start over with another number of streams"
            )
        return frames

    @property
    def batch(self) -> int:
        return 0 if self.state is None else self.state[0].shape[1]

    @torch.inference_mode()
    def step(self, frames: torch.Tensor) -> torch.Tensor:
        """Feed the next frame of every stream; returns the output for this step, ``(N, classes)``.

        Runs in the caller's precision: inside ``with model.autocast("bf16"):`` in bfloat16.
        """
        frames = self._frame_to_canonical(frames)
        previous = self._previous
        if previous is not None and self._restart is not None:  # restarted streams: as if at their first frame
            previous = previous.index_copy(0, self._restart, frames.index_select(0, self._restart))
        self._restart = None
        logits, new, self._caches = self.graph.step(frames, self.state, self._caches, previous)
        if self.model.config.motion != "none":
            self._previous = frames
        # the carried state stays float32 (under bf16 the RNN hands back bfloat16)
        self.state = tuple(h.float() for h in new)
        self.steps += 1
        return logits.float()

    def reset(self, streams: Sequence[int] | torch.Tensor | None = None) -> None:
        """Start over: all streams (None), or only those listed, while the others go on."""
        if streams is None:
            self.state, self._caches, self._previous, self._restart, self.steps = None, None, None, None, 0
            return
        if self.state is None:
            return
        idx = torch.as_tensor(streams, dtype=torch.long)
        # out of place: the state was made under inference mode; a zero state is the RNN's own initial state,
        # and zero caches are the causal convolutions' own padding
        self.state = tuple(s.index_fill(1, idx, 0) for s in self.state)  # (layers, N, D)
        if self._caches is not None:
            self._caches = [c.index_fill(0, idx, 0) for c in self._caches]
        if self._previous is not None:  # a restarted stream's next frame is its first: its difference is zero
            self._restart = idx

    def get_state(self) -> dict[str, torch.Tensor]:
        """The carried state, for a server that keeps many streams: ``{"h": (layers, N, D)[, "c": ...]}``
        (a ConvLSTM's ``h`` and ``c`` are maps, ``(layers, N, D, H', W')``), plus ``"previous"`` (the last frames,
        ``(N, C, H, W)``) and ``"restart"`` (streams reset since) with motion input."""
        if self.state is None:
            return {}
        names = ("h", "c")
        out = {n: s.clone() for n, s in zip(names, self.state)}
        for i, c in enumerate(self._caches or []):
            out[f"conv{i}"] = c.clone()
        if self._previous is not None:
            out["previous"] = self._previous.clone()
        if self._restart is not None:
            out["restart"] = self._restart.clone()
        return out

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a state from :meth:`get_state` (an empty dict starts over)."""
        if not state:
            self.reset()
            return
        parts = [state["h"]] + ([state["c"]] if "c" in state else [])
        d = self.rnn.hidden_size
        maps = self.graph.reads_maps
        for p in parts:
            if p.dim() != (5 if maps else 3) or p.shape[0] != self.rnn.num_layers or p.shape[2] != d:
                want = f"(layers={self.rnn.num_layers}, N, D={d}" + (", H', W')" if maps else ")")
                raise ShapeError(f"a stream state is {want}, got {tuple(p.shape)}")
        if (maps or isinstance(self.rnn, nn.LSTM)) and len(parts) != 2:
            raise ShapeError(f"{'a ConvLSTM' if maps else 'an LSTM'}'s state needs both 'h' and 'c'")
        if maps and parts[0].shape != parts[1].shape:
            raise ShapeError(
                f"a ConvLSTM's h and c have one shape, got {tuple(parts[0].shape)} and {tuple(parts[1].shape)}"
            )
        self.state = tuple(p.clone() for p in parts)
        convs = sorted((k for k in state if k.startswith("conv")), key=lambda k: int(k[4:]))
        self._caches = [state[k].clone() for k in convs] or None
        self._previous = state["previous"].clone() if "previous" in state else None
        self._restart = state["restart"].clone() if "restart" in state else None
