"""``infer``: the output shape of any module for an input shape, by a dry run on ``meta``.

>>> import torch.nn as nn
>>> infer(nn.Conv2d(3, 8, 3, stride=2), (1024, 3, 1024, 1024))
torch.Size([1024, 8, 511, 511])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._dry import check_shape, merge_unknown, placeholders, run, shapes_of
from .guard import diagnosed

__all__ = ["infer"]


def infer(module: nn.Module, input_shape: tuple, *, dtype: torch.dtype = torch.float32, **kwargs) -> Any:
    """The output shape of ``module`` for an input of ``input_shape``, by a dry run on ``meta``.

    Args:
        module: any module.
        input_shape: the full input shape, batch included; ``None`` marks a size that may
            vary (the time axis, say), reported as ``None`` where it reaches the output.
        dtype: the input's dtype.
        kwargs: further keyword arguments of the module's forward.

    Returns:
        A ``torch.Size`` for a tensor output (a tuple with ``None`` for unknown sizes),
        nested tuples of them for tuple outputs (an LSTM's ``(out, (h, c))``).

    Raises:
        ShapeError: the module cannot take that shape; the message is the diagnosis.
    """
    shape = check_shape(input_shape, "infer")
    with diagnosed(module, shape, dtype=dtype, **kwargs):
        out = shapes_of(run(module, placeholders(shape, 5), dtype, kwargs))
        if None in shape:  # a second run with other placeholders: the sizes that change are unknown
            out = merge_unknown(out, shapes_of(run(module, placeholders(shape, 7), dtype, kwargs)))
    return out
