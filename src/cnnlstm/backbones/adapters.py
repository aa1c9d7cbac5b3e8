"""``torchvision:NAME`` and ``timm:NAME``: those packages' models without their classifier, keeping the last
feature map; weights come from a local file only (``weights="path"``), nothing downloads."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, require
from .registry import load_weights

__all__ = ["timm_backbone", "torchvision_backbone"]


_CLASSIFIER_NAMES = ("avgpool", "global_pool", "fc", "classifier", "head", "heads")


def _strip_classifier(model: nn.Module, name: str) -> nn.Module:
    """Keep a torchvision model's convolutional trunk, up to its last feature map."""
    if isinstance(getattr(model, "features", None), nn.Module):
        return model.features  # VGG, AlexNet, MobileNet, EfficientNet, DenseNet, ConvNeXt, ...
    kept = []
    for child_name, child in model.named_children():
        if child_name in _CLASSIFIER_NAMES:
            break
        kept.append((child_name, child))
    if not kept or len(kept) == len(list(model.children())):
        raise ConfigError(
            f"torchvision:{name}: cannot find where its classifier starts (looked for .features or a child "
            f"named one of {', '.join(_CLASSIFIER_NAMES)}); pass the trunk as an nn.Module instead"
        )
    return nn.Sequential(OrderedDict(kept))


class _TimmFeatures(nn.Module):
    """A timm model's ``forward_features``: its last feature map ``(B, C, H, W)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def torchvision_backbone(name: str, weights: Any = None, **options) -> nn.Module:
    """torchvision's model ``name`` (no download), local ``weights`` loaded, its classifier stripped."""
    tv = require("torchvision.models", "vision", f"backbone 'torchvision:{name}'")
    model = tv.get_model(name, weights=None, **options)
    if weights is not None:
        load_weights(model, weights)
    return _strip_classifier(model, name)


def timm_backbone(name: str, in_channels: int, weights: Any = None, **options) -> nn.Module:
    """timm's model ``name`` for ``in_channels`` (no download), local ``weights`` loaded: its ``forward_features``."""
    timm = require("timm", "vision", f"backbone 'timm:{name}'")
    model = timm.create_model(name, pretrained=False, in_chans=in_channels, **options)
    if weights is not None:
        load_weights(model, weights)
    model.reset_classifier(0, "")
    return _TimmFeatures(model)
