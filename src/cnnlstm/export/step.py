"""The streaming step as a graph an exporter can trace: :class:`~cnnlstm.streaming.StepGraph`, for clip models."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..streaming import StepGraph

if TYPE_CHECKING:
    from ..model import CNNLSTM

__all__ = ["StepGraph", "step_graph"]


def step_graph(model: CNNLSTM) -> StepGraph:
    """The exportable step of a clip model that can stream (eval mode): ``(frame, h[, c]) → (logits, h[, c])``.

    Raises:
        ConfigError: the model cannot stream, or it is a series model (its step also carries its causal
            convolutions' last inputs, which the graph's inputs do not).
    """
    graph = StepGraph(model)
    if model.kind != "clip":
        raise ConfigError("the streaming-step export is for clip models (frames); export series models whole")

    return graph.eval()
