"""The command group, the one place library errors become command-line errors, and logging for people."""

from __future__ import annotations

import functools
import logging
import shlex
import sys
from collections.abc import Callable, Iterable
from typing import Any

import click

from .. import __version__
from ..errors import CnnlstmError, Interrupted

__all__ = ["anomaly", "echo_lines", "library_errors", "main", "setup_logging"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cnnlstm")
def main() -> None:
    """cnnlstm: CNN -> LSTM/GRU models that work on their shapes."""


@main.group()
def anomaly() -> None:
    """Anomaly detection: learn normal videos or series (fit), then score new ones (score)."""


def library_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Show a :class:`~cnnlstm.errors.CnnlstmError` as one line (``Error: ...``, exit 1), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Interrupted as e:
            again = [a for a in sys.argv[1:] if a not in ("--overwrite", "--resume")] + ["--resume"]
            text = str(e).replace("the same command and --resume", "") + "cnnlstm " + shlex.join(again)
            raise click.ClickException(text) from None
        except CnnlstmError as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def echo_lines(lines: Iterable[str]) -> None:
    click.echo("\n".join(lines))


class _Plain(logging.Formatter):
    """Progress (INFO) as it is; warnings and errors after their level."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno == logging.INFO else f"{record.levelname}: {text}"


def setup_logging() -> None:
    """Skipped files and other warnings of cnnlstm reach the terminal; Lightning's chatter does not."""
    handler = logging.StreamHandler()
    handler.setFormatter(_Plain())
    log = logging.getLogger("cnnlstm")
    if not log.handlers:
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
