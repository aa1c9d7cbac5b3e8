"""What the doctor reports: a :class:`Finding` per mistake or trap, a :class:`Diagnosis` over them all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Diagnosis", "Finding", "format_shape"]


def format_shape(shape: Any) -> str:
    """A shape as people write it: ``(8, ?, 64)`` with ``?`` for an unknown size; ``-`` for none.

    >>> format_shape((2, None, 16)), format_shape(((2, 5), (1, 2, 5))), format_shape(None)
    ('(2, ?, 16)', '((2, 5), (1, 2, 5))', '-')
    """
    if shape is None:
        return "-"
    if isinstance(shape, (torch.Size, tuple)) and all(isinstance(s, int) or s is None for s in shape):
        return "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
    if isinstance(shape, tuple):
        return "(" + ", ".join(format_shape(s) for s in shape) + ")"
    return str(shape)


@dataclass
class Finding:
    """One mistake (``severity="error"``) or silent trap (``"warning"``) found by :func:`diagnose`."""

    severity: str
    path: str
    module: str
    got: Any
    wants: str
    problem: str
    fix: str
    known: bool = True  # False: a failure the doctor has no rule for (PyTorch's own message)

    def __str__(self) -> str:
        where = f"{self.module} '{self.path}'" if self.path else self.module
        wants = f" wants {self.wants}," if self.wants else ""
        return f"{where}{wants} got {format_shape(self.got)}: {self.problem}. {self.fix}".rstrip()


@dataclass(frozen=True)
class Site:
    """Where a rule looks: the module's path and kind, the input shape it got and the one it wants."""

    path: str
    module: str
    got: Any
    wants: str = ""

    def finding(self, problem: str, fix: str, severity: str = "error") -> Finding:
        """A :class:`Finding` at this site."""
        return Finding(severity, self.path, self.module, self.got, self.wants, problem, fix)


@dataclass
class Diagnosis:
    """What :func:`diagnose` found. ``ok`` is True when nothing stops the model from running."""

    findings: list[Finding] = field(default_factory=list)
    output: Any = None

    @property
    def error(self) -> Finding | None:
        return next((f for f in self.findings if f.severity == "error"), None)

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return self.error is None

    def __str__(self) -> str:
        if not self.findings:
            return f"ok: output {format_shape(self.output)}"
        lines = [f"{f.severity}: {f}" for f in self.findings]
        if self.ok:
            lines.insert(0, f"runs: output {format_shape(self.output)}, with {len(self.findings)} warning(s)")
        return "\n".join(lines)

    def __repr__(self) -> str:  # a REPL shows what was found, not the dataclass
        return str(self)
