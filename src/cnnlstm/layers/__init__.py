"""The building blocks: time-distributed wrapper, bridges, recurrent part and heads."""

from .bridges import BRIDGES, Bridge, bridge, register_bridge
from .temporal import HEADS, Head, Temporal, head, register_head
from .time_distributed import TimeDistributed

__all__ = [
    "BRIDGES",
    "HEADS",
    "Bridge",
    "Head",
    "Temporal",
    "TimeDistributed",
    "bridge",
    "head",
    "register_bridge",
    "register_head",
]
