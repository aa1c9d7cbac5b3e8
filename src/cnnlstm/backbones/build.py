"""``build_backbone``: a backbone from its name (a registered one, ``torchvision:NAME``, ``timm:NAME``)."""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from .adapters import timm_backbone, torchvision_backbone
from .registry import BACKBONES, load_weights

__all__ = ["build_backbone"]


def build_backbone(spec: str | nn.Module, in_channels: int, **options) -> nn.Module:
    """Build a backbone from its name (or pass a module through).

    Args:
        spec: a registered name (``"small"``, ``"conv1d"``, ``"fcn"``, ``"resnet1d"``, ``"inception1d"``),
            ``"torchvision:NAME"``, ``"timm:NAME"`` or an ``nn.Module``.
        in_channels: ``C`` of the frames (``F`` of a series).
        options: the backbone's own options; ``weights="path"`` loads local weights.

    Returns:
        The backbone module.
    """
    if isinstance(spec, nn.Module):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"backbone must be a name or an nn.Module, got {type(spec).__name__}")
    if spec.startswith("torchvision:"):
        return torchvision_backbone(spec.split(":", 1)[1], **options)
    if spec.startswith("timm:"):
        return timm_backbone(spec.split(":", 1)[1], in_channels, **options)
    cls = BACKBONES.get(spec)
    weights = options.pop("weights", None)
    try:
        module = cls(in_channels, **options)
    except TypeError as e:
        raise ConfigError(f"backbone {spec!r} does not take these options {sorted(options)}: {e}") from None
    if weights is not None:
        load_weights(module, weights)
    return module
