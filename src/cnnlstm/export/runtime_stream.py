"""Streaming an exported model frame by frame: the step graph with its state carried from call to call, or
OpenVINO's stateful ``stream`` artifact with the state held in the runtime (:mod:`.ov_stream`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["RuntimeStreamer"]


class RuntimeStreamer:
    """``step(frames) -> logits`` for ``N`` streams at once, ``reset()`` to start them over; as
    :class:`~cnnlstm.streaming.Streamer` does for the PyTorch model.

    Args:
        model: the :class:`~cnnlstm.export.runtime.RuntimeModel` whose export folder holds the ``stream`` or
            ``step`` artifact (not imported here: it imports this module).
    """

    def __init__(self, model: Any):
        self.model = model
        self.request: Any = None  # OpenVINO's stateful infer request, where the stream artifact is used
        self.state: dict[str, np.ndarray] | None = None  # the step graph's carried inputs; None: a fresh stream
        if "streaming" not in model.manifest:
            raise ConfigError(f"{model.folder / 'export.json'}: no streaming step: {model.manifest.get('no_step')}")
        if model.runtime == "openvino" and model.precision != "int8":  # the stateful stream is float32
            self.entry = model._entry("stream", "fp32")
            self.request = model.compiled(self.entry).create_infer_request()
        else:
            self.entry = model._entry("step")
        self.kind = self.entry["kind"]

    def reset(self) -> None:
        """Start every stream over (a new batch size may follow)."""
        self.state = None
        if self.request is not None:
            self.request.reset_state()

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
        return torch.from_numpy(np.asarray(out)).to(frames.device)

    def _step(self, frame: np.ndarray) -> np.ndarray:
        """One call of the step graph: ``frame`` and the carried state in, logits out, the state kept."""
        streaming = self.model.manifest["streaming"]
        if self.state is None:
            self.state = self._start(frame)
        feeds = {"frame": frame, **self.state}
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
