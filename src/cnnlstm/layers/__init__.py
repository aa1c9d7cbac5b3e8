"""The building blocks: time-distributed wrapper, bridges, recurrent part (LSTM/GRU, ConvLSTM) and heads."""

from .bridges import BRIDGES, Bridge, bridge, register_bridge
from .convlstm import ConvLSTM
from .temporal import HEADS, Head, Temporal, head, register_head
from .time_distributed import TimeDistributed

__all__ = [
    "BRIDGES",
    "HEADS",
    "Bridge",
    "ConvLSTM",
    "Head",
    "Temporal",
    "TimeDistributed",
    "bridge",
    "head",
    "register_bridge",
    "register_head",
]
