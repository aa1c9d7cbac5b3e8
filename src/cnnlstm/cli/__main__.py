"""``python -m cnnlstm.cli``: the ``cnnlstm`` command."""

from . import run

run()
