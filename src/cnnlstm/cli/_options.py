"""Command-line options generated from the library's own dataclasses, so that no option restates a field.

Each field becomes ``--field-name`` with the field's type, its line of the class docstring's ``Attributes:``
as help, and ``None`` as the default: a command passes on only the options a user gave (:func:`given`), and
the library fills in the rest with the task's own defaults (shown in the help).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

import click

__all__ = ["given", "options_from", "parse_ints", "parse_size"]


def parse_ints(text: str) -> tuple[int | None, ...]:
    """``"8,16,3,112,112"`` → ``(8, 16, 3, 112, 112)``; ``?`` or ``None`` marks a size that may vary."""
    out: list[int | None] = []
    for part in text.replace("x", ",").split(","):
        part = part.strip()
        if part in ("?", "None", "none"):
            out.append(None)
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise click.BadParameter(f"{text!r}: sizes are integers separated by commas, e.g. 8,16,3,112,112") from None
    return tuple(out)


def parse_size(text: str) -> tuple[int, int]:
    """``"112"`` or ``"112x96"`` → ``(H, W)``."""
    try:
        parts = parse_ints(text)
    except click.BadParameter:
        parts = ()
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or None in parts or min(parts) < 1:
        raise click.BadParameter(f"{text!r}: give a frame size as 112 or 112x112 (H x W), positive")
    return parts  # type: ignore[return-value]


def _docs(cls: type) -> dict[str, str]:
    """``{field: help}`` from the ``Attributes:`` section of ``cls``'s docstring (``a, b: text`` names several)."""
    text = (cls.__doc__ or "").split("Attributes:", 1)[-1]
    out: dict[str, str] = {}
    for m in re.finditer(r"^\s{8}([\w, ]+):\s*(.+(?:\n\s{12,}.+)*)", text, re.M):
        for name in m.group(1).split(","):
            out[name.strip()] = " ".join(m.group(2).replace("``", "").split())
    return out


def _callback(parse: Callable[[str], Any]) -> Callable[[Any, Any, Any], Any]:
    return lambda ctx, param, value: None if value is None else parse(value)


def _base(hint: Any) -> Any:
    """``int`` for ``int | None``; ``str`` for a union of several types or ``Any``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return hint


def _option(
    name: str, hint: Any, help: str, default: Any, choices: Sequence[str] | None, lowest: float | None = None
) -> Callable:
    flag = "--" + name.replace("_", "-")
    if default is not None and default != () and not isinstance(default, bool | type(None)):
        help += f" [default: {'x'.join(map(str, default)) if isinstance(default, tuple) else default}]"
    base = _base(hint)
    if base is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help)
    if choices:
        return click.option(flag, name, default=None, type=click.Choice(list(choices)), help=help)
    if typing.get_origin(base) is tuple:
        parse = parse_size if typing.get_args(base) == (int, int) else (lambda t: tuple(parse_ints(t)))
        return click.option(flag, name, default=None, callback=_callback(parse), help=help)
    if base in (int, float):
        kind = click.IntRange(min=lowest) if base is int and lowest is not None else base
        return click.option(flag, name, default=None, type=kind, help=help)
    return click.option(flag, name, default=None, type=str, help=help)


def options_from(
    cls: type,
    only: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    choices: dict[str, Sequence[str]] | None = None,
    notes: dict[str, str] | None = None,
    show_defaults: bool = True,
    shown: dict[str, Any] | None = None,
    lowest: dict[str, int] | None = None,
) -> Callable:
    """A decorator adding one option per field of the dataclass ``cls`` (``only`` these, less ``exclude``).

    ``choices`` restricts fields to names (from the library's registries); ``notes`` add to a field's help;
    ``show_defaults=False`` leaves the dataclass's defaults out of the help (where the command has its own);
    ``shown`` are the defaults the help shows in place of the dataclass's (a task's own); ``lowest`` the least
    value of whole-number fields, checked as the command line is parsed.
    """
    hints = typing.get_type_hints(cls)
    docs = _docs(cls)
    defaults = {
        f.name: f.default if f.default is not dataclasses.MISSING and show_defaults else None
        for f in dataclasses.fields(cls)
    }
    defaults.update(shown or {})
    names = [n for n in (only or defaults) if n not in exclude]

    def decorate(fn: Callable) -> Callable:
        for name in reversed(names):
            help = docs.get(name, "") + (f" {notes[name]}" if notes and name in notes else "")
            help = help.strip()
            help = help[:1].upper() + help[1:]
            limits = ((choices or {}).get(name), (lowest or {}).get(name))
            fn = _option(name, hints[name], help, defaults[name], *limits)(fn)
        return fn

    return decorate


def given(kwargs: dict[str, Any], cls: type) -> dict[str, Any]:
    """The fields of ``cls`` that a user gave: those in ``kwargs`` that are not None."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in kwargs.items() if k in names and v is not None}
