"""Conv-BatchNorm folding: an inference copy of a module with each BatchNorm2d merged into the Conv2d before it."""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["folded_copy"]


def _pairs(module: nn.Module) -> list[tuple[str, str, str]]:
    """``(parent's name, conv's name, bn's name)`` for each Conv2d followed by a BatchNorm2d with running
    statistics, as adjacent children of one container (conv-BN-ReLU blocks)."""
    out = []
    for name, parent in module.named_modules():
        for (a, conv), (b, bn) in itertools.pairwise(parent.named_children()):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                out.append((name, a, b))
    return out


def folded_copy(module: nn.Module) -> nn.Module:
    """An eval-mode, ``channels_last`` copy of ``module`` for inference, with each Conv2d-BatchNorm2d pair folded
    into one convolution (the BatchNorm left as ``nn.Identity``) and no parameter asking for gradients.

    ``module`` itself is left as it is. Build it outside inference mode: the copy's tensors are ordinary ones.
    """
    out = copy.deepcopy(module).eval()
    for parent_name, a, b in _pairs(out):
        parent = out.get_submodule(parent_name)
        setattr(parent, a, fuse_conv_bn_eval(getattr(parent, a), getattr(parent, b)))
        setattr(parent, b, nn.Identity())
    out.requires_grad_(False)
    return out.to(memory_format=torch.channels_last)
