"""The one family of errors that cnnlstm raises.

Every error a user can trigger derives from :class:`CnnlstmError`; shape problems are
:class:`ShapeError`, which is also a :class:`ValueError` so that ``except ValueError`` keeps
working in code that predates cnnlstm.
"""

from __future__ import annotations

__all__ = [
    "CnnlstmError",
    "ConfigError",
    "DataError",
    "ExportError",
    "Interrupted",
    "MissingDependencyError",
    "ShapeError",
    "VideoError",
]


class CnnlstmError(Exception):
    """Base class of every error cnnlstm raises on purpose."""


class ShapeError(CnnlstmError, ValueError):
    """A tensor of the wrong rank, size or layout reached a cnnlstm module.

    The message names the module, the shape it got, the shape it wants and the fix.
    """


class ConfigError(CnnlstmError, ValueError):
    """An option that does not exist, or options that do not fit together."""


class VideoError(CnnlstmError):
    """A video file that cannot be decoded: corrupt, truncated, empty, or with no video stream."""


class DataError(CnnlstmError, ValueError):
    """A data set that cannot be used: an empty folder, a missing class, a path outside the root."""


class ExportError(CnnlstmError):
    """An exported model does not match PyTorch (verification failed), or the export itself failed."""


class Interrupted(CnnlstmError):
    """Training was stopped by Ctrl-C or SIGTERM; the best model so far is in the run folder and ``--resume``
    continues. ``summary`` is the run's :class:`~cnnlstm.run.TrainSummary` (None where no epoch ended)."""

    def __init__(self, message: str, summary=None):
        super().__init__(message)
        self.summary = summary


class MissingDependencyError(CnnlstmError, ImportError):
    """A feature needs an optional dependency that is not installed."""


def require(module: str, extra: str, feature: str):
    """Import an optional dependency or say which extra installs it.

    Args:
        module: the importable name, e.g. ``"av"``.
        extra: the cnnlstm extra that brings it, e.g. ``"video"``.
        feature: what the user tried to do, for the message.

    Returns:
        The imported module.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{feature} needs the optional package '{module}', which is not installed: pip install 'cnnlstm[{extra}]'"
        ) from e
