"""Ensembles: ``k`` models of one architecture, trained from ``k`` seeds, run as one model.

A classifier ensemble averages its members' class probabilities (InceptionTime's ensemble of 5 does so) and
returns the logarithm of that mean, so that ``softmax`` of its output is the mean probability and ``argmax`` the
ensemble's class; a forecaster ensemble averages the forecasts. Saved as one folder: the members' common
``config.json``, their weights in one ``model.safetensors`` (``members.0.*``, ``members.1.*``, ...), and
``ensemble.json`` with their count. :func:`load_model` reads either a single model's folder or an ensemble's.

>>> from cnnlstm import CNNLSTM
>>> kw = dict(input_shape=(None, 2), layout="NTF", backbone="conv1d", bridge="none", hidden_size=4, num_classes=3)
>>> ens = Ensemble([CNNLSTM(**kw), CNNLSTM(**kw)]).eval()
>>> ens(torch.randn(5, 7, 2)).exp().sum(-1).allclose(torch.ones(5))
True
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import atomic_write
from .errors import ConfigError
from .model import CNNLSTM

__all__ = ["ENSEMBLE_FILE", "Ensemble", "EnsembleStreamer", "load_model"]

ENSEMBLE_FILE = "ensemble.json"


class Ensemble(nn.Module):
    """Members of one architecture (same :class:`~cnnlstm.CNNLSTMConfig`), run as one model.

    Args:
        members: two or more :class:`~cnnlstm.CNNLSTM` with equal configs.

    Attributes read by the rest of the library (``config``, ``layout``, ``kind``, ``head``, :meth:`autocast`)
    are the members' own.
    """

    def __init__(self, members: Sequence[CNNLSTM]):
        super().__init__()
        if len(members) < 2:
            raise ConfigError(f"an ensemble needs at least 2 members, got {len(members)}")
        first = members[0].config.to_dict()
        for i, m in enumerate(members[1:], 1):
            if m.config.to_dict() != first:
                raise ConfigError(f"ensemble member {i} is built differently from member 0: members share one config")
        self.members = nn.ModuleList(members)

    @property
    def config(self):
        """The members' common :class:`~cnnlstm.CNNLSTMConfig`."""
        return self.members[0].config

    @property
    def layout(self):
        return self.members[0].layout

    @property
    def kind(self) -> str:
        return self.members[0].kind

    @property
    def fixed_steps(self) -> int | None:
        """As :attr:`CNNLSTM.fixed_steps`: the one ``T`` the members take, or None."""
        return self.members[0].fixed_steps

    @property
    def head(self) -> nn.Module:
        return self.members[0].head

    @property
    def averages_probabilities(self) -> bool:
        """True for classifiers (class probabilities averaged), False for forecasters (forecasts averaged)."""
        return self.config.head != "forecast"

    def autocast(self, precision: str = "bf16") -> contextlib.AbstractContextManager:
        """As :meth:`CNNLSTM.autocast` (it covers every member)."""
        return self.members[0].autocast(precision)

    def combine(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """The members' outputs ``k x (N, ..., classes)`` as one: log of the mean softmax, or the mean forecast."""
        stacked = torch.stack([o.float() for o in outputs])  # (k, N, ..., classes)
        if not self.averages_probabilities:
            return stacked.mean(0)
        return torch.logsumexp(stacked.log_softmax(-1), dim=0) - math.log(len(outputs))

    def forward(self, x: torch.Tensor, lengths: Any = None) -> torch.Tensor:
        """Args: x ``(N, *input_shape)`` in the members' layout; lengths ``(N,)``.
        Returns ``(N, classes)`` (or ``(N, T, classes)``, ``(N, horizon, k)``): see :meth:`combine`."""
        return self.combine([m(x, lengths) for m in self.members])

    def stream(self) -> EnsembleStreamer:
        """Frame-by-frame inference of every member, combined at each step (:class:`EnsembleStreamer`)."""
        return EnsembleStreamer(self)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors`` (all members) and ``ensemble.json`` (atomically)."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(d / "model.safetensors", lambda p: save_file(state, p, metadata={"format": "pt"}))
        atomic_write(d / "config.json", lambda p: Path(p).write_text(self.config.to_json() + "\n"))
        info = {"members": len(self.members), "combine": "mean probability" if self.averages_probabilities else "mean"}
        atomic_write(d / ENSEMBLE_FILE, lambda p: Path(p).write_text(json.dumps(info) + "\n"))
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> Ensemble:
        """Load an ensemble written by :meth:`save_pretrained` (safetensors: no code runs on load)."""
        from safetensors.torch import load_file

        from .config import CNNLSTMConfig

        d = Path(directory)
        try:
            k = int(json.loads((d / ENSEMBLE_FILE).read_text())["members"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{d / ENSEMBLE_FILE} is damaged ({e}): train the run again, or restore it") from None
        config = CNNLSTMConfig.from_json((d / "config.json").read_text())
        ensemble = cls([CNNLSTM.from_config(config) for _ in range(k)])
        ensemble.load_state_dict(load_file(str(d / "model.safetensors")))
        return ensemble


class EnsembleStreamer:
    """Streams every member (each its own :class:`~cnnlstm.streaming.Streamer`) and combines their outputs at
    every step as :meth:`Ensemble.combine` does, so a stream equals the ensemble on the whole clip."""

    def __init__(self, ensemble: Ensemble):
        self.ensemble = ensemble
        self.streamers = [m.stream() for m in ensemble.members]

    @property
    def batch(self) -> int:
        return self.streamers[0].batch

    def step(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N, *frame)`` → the combined output ``(N, classes)`` after this frame."""
        return self.ensemble.combine([s.step(frames) for s in self.streamers])

    def reset(self, streams: Sequence[int] | torch.Tensor | None = None) -> None:
        for s in self.streamers:
            s.reset(streams)

    def get_state(self) -> dict[str, torch.Tensor]:
        """Every member's carried state, its keys prefixed by the member's index (``"0.h"``, ...)."""
        return {f"{i}.{k}": v for i, s in enumerate(self.streamers) for k, v in s.get_state().items()}

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        for i, s in enumerate(self.streamers):
            s.set_state({k.split(".", 1)[1]: v for k, v in state.items() if k.split(".", 1)[0] == str(i)})


def load_model(directory: str | Path) -> CNNLSTM | Ensemble:
    """The model saved in ``directory``: an :class:`Ensemble` where ``ensemble.json`` is there, else a
    :class:`~cnnlstm.CNNLSTM`."""
    d = Path(directory)
    return Ensemble.from_pretrained(d) if (d / ENSEMBLE_FILE).is_file() else CNNLSTM.from_pretrained(d)
