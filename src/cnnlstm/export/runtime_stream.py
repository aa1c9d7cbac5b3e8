"""Streaming an exported model frame by frame: the step graph with its state carried from call to call, or
OpenVINO's stateful ``stream`` artifact with the state held in the runtime (:mod:`.ov_stream`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, ShapeError

__all__ = ["RuntimeStreamer"]


def _has(model: Any, kind: str, precision: str) -> bool:
    """Whether the model's export folder lists a ``kind`` artifact of ``precision`` in its runtime."""
    want = (model.runtime, precision, kind)
    return any((e["runtime"], e["precision"], e["kind"]) == want for e in model.manifest.get("artifacts", []))


class RuntimeStreamer:
    """``step(frames) -> logits`` for ``N`` streams at once, ``reset()`` to start them all over and
    ``reset([i, ...])`` some of them while the others go on; as :class:`~cnnlstm.streaming.Streamer` does for the
    PyTorch model.

    Args:
        model: the :class:`~cnnlstm.export.runtime.RuntimeModel` whose export folder holds the ``stream`` or
            ``step`` artifact (not imported here: it imports this module).
    """

    def __init__(self, model: Any):
        self.model = model
        self.request: Any = None  # OpenVINO's stateful infer request, where the stream artifact is used
        self.state: dict[str, np.ndarray] | None = None  # the step graph's carried inputs; None: a fresh stream
        self.streams = 0  # N of the streams under way (0 after a full reset)
        self._restart: np.ndarray | None = None  # motion input: streams restarted since the last step
        if "streaming" not in model.manifest:
            raise ConfigError(f"{model.folder / 'export.json'}: no streaming step: {model.manifest.get('no_step')}")
        if model.runtime == "openvino" and (model.precision != "int8" or _has(model, "stream", "int8")):
            self.entry = model._entry("stream")  # bf16: the float32 stream, compiled in bfloat16
            self.request = model.compiled(self.entry).create_infer_request()
        else:  # an int8 export written before there was an int8 stream: its step
            self.entry = model._entry("step")
        self.kind = self.entry["kind"]

    def reset(self, streams: Sequence[int] | np.ndarray | torch.Tensor | None = None) -> None:
        """Start over: every stream (None; a new batch size may follow), or only those listed, while the others go
        on. A restarted stream's next frame is its first: its state is zeros again and, with motion input, its
        frame difference zero."""
        if streams is None:
            self.state, self.streams, self._restart = None, 0, None
            if self.request is not None:
                self.request.reset_state()
            return
        if not self.streams:  # nothing under way: every stream starts fresh anyway
            return
        idx = np.asarray(streams, dtype=np.int64).reshape(-1)
        if idx.size and not ((idx >= 0) & (idx < self.streams)).all():
            last = self.streams - 1
            raise ShapeError(f"reset({idx.tolist()}): there are {self.streams} streams, numbered 0 to {last}")
        if self.request is not None:
            self._reset_variables(idx)
            return
        for name, value in self.state.items():  # (layers, N, ...) h and c; previous (N, C, H, W)
            if name != "previous":
                value = value.copy()  # the runtime's output may be read-only
                value[:, idx] = 0  # a zero state is the RNN's own initial state
                self.state[name] = value
        if "previous" in self.state:
            self._restart = idx if self._restart is None else np.union1d(self._restart, idx)

    def _reset_variables(self, idx: np.ndarray) -> None:
        """OpenVINO's stateful stream: each variable's rows of the streams ``idx`` set to their value after a reset,
        zeros (:mod:`.ov_stream`: ``h``, ``c`` ``(layers, N, ...)``; ``previous`` ``(N, C, H, W)`` and ``started``
        ``(N, 1, 1, 1)``, whose zero makes the next frame its own previous)."""
        import openvino as ov

        for variable in self.request.query_state():
            value = variable.state.data.copy()
            axis = 0 if variable.name in ("previous", "started") else 1
            index = [slice(None)] * value.ndim
            index[axis] = idx
            value[tuple(index)] = 0
            variable.state = ov.Tensor(value)

    @torch.inference_mode()
    def step(self, frames: torch.Tensor) -> torch.Tensor:
        """Feed one frame per stream.

        Args:
            frames: ``(N, C, H, W)`` in the model's frame layout (its clip layout without T).

        Returns:
            ``(N, classes)`` logits after this frame, float32 on ``frames``' device.
        """
        arr = frames.detach().float().cpu().numpy()
        if self.request is not None:
            out = self.request.infer({"frame": arr})[0].copy()
        else:
            out = self._step(arr)
        self.streams = arr.shape[0]
        return torch.from_numpy(np.asarray(out)).to(frames.device)

    def _step(self, frame: np.ndarray) -> np.ndarray:
        """One call of the step graph: ``frame`` and the carried state in, logits out, the state kept."""
        streaming = self.model.manifest["streaming"]
        if self.state is None:
            self.state = self._start(frame)
        feeds = {"frame": frame, **self.state}
        if self._restart is not None:  # restarted streams: as if at their first frame, their own previous
            feeds["previous"] = feeds["previous"].copy()
            feeds["previous"][self._restart] = frame[self._restart]
            self._restart = None
        outs = dict(zip(streaming["outputs"], self.model.run(self.entry, feeds)))
        self.state = {into: outs[out] for out, into in streaming["carry"].items()}
        return outs["logits"]

    def _start(self, frame: np.ndarray) -> dict[str, np.ndarray]:
        """A fresh stream's state: zeros of the step artifact's state shapes (``N`` = this batch), and a motion
        model's ``previous`` the first frame itself."""
        shapes = {i["name"]: i["shape"] for i in self.entry["inputs"]}
        state = {}
        for name in self.model.manifest["streaming"]["inputs"][1:]:
            if name == "previous":
                state[name] = frame
                continue
            dims = [frame.shape[0] if d == "N" else d for d in shapes[name]]
            if not all(isinstance(d, int) for d in dims):
                raise ConfigError(f"{self.entry['path']}: the state {name!r} has an unknown axis: {shapes[name]}")
            state[name] = np.zeros(dims, np.float32)
        return state
