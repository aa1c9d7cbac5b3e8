"""The shape doctor: ``infer``, ``explain`` and ``diagnose``, all by dry runs on ``meta``.

| file          | what it holds                                                            |
|---------------|--------------------------------------------------------------------------|
| ``_dry``      | the meta dry run, placeholders for unknown sizes, the ``dry_run`` marker |
| ``findings``  | ``Finding``, ``Diagnosis`` and ``format_shape``                          |
| ``rules``     | one small rule per kind of module (RNN, Conv2d, Conv1d, Linear)          |
| ``doctor``    | ``diagnose`` and the ``RULES`` table keyed by module type                |
| ``guard``     | ``diagnosed``/``shape_guard``: a failure becomes the diagnosis           |
| ``infer``     | ``infer``                                                                |
| ``explain``   | ``explain`` and its table                                                |

Nothing here imports cnnlstm's layers: rules read the attributes those layers declare.

>>> import torch.nn as nn
>>> infer(nn.Conv2d(3, 8, 3, stride=2), (1024, 3, 1024, 1024))
torch.Size([1024, 8, 511, 511])
"""

from .doctor import RULES, diagnose
from .explain import Explanation, Row, explain
from .findings import Diagnosis, Finding, format_shape
from .guard import shape_guard
from .infer import infer

__all__ = [
    "RULES",
    "Diagnosis",
    "Explanation",
    "Finding",
    "Row",
    "diagnose",
    "explain",
    "format_shape",
    "infer",
    "shape_guard",
]
