"""Per-frame CNNs: the built-in ``small`` 2-D CNN, ``conv1d`` for series, and adapters.

A 2-D backbone maps images ``(B, C, H, W)`` to feature maps ``(B, C', H', W')``; the model
wraps it in :class:`~cnnlstm.TimeDistributed` for clips. A 1-D backbone maps series
``(N, T, F)`` to ``(N, T, F')``: the ``(N, F, T)`` permutation that ``Conv1d`` wants lives
inside it and nowhere else.

``torchvision:NAME`` and ``timm:NAME`` build those packages' models without their
classifier and keep the last feature map; weights come from a local file only
(``weights="path"``), nothing downloads.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import Registry
from .errors import ConfigError, ShapeError, require
from .lengths import valid_mask

__all__ = [
    "BACKBONES",
    "Conv1dBackbone",
    "SmallCNN",
    "build_backbone",
    "load_weights",
    "register_backbone",
    "time_stride",
]

BACKBONES: Registry = Registry("backbone")
register_backbone = BACKBONES.register


def _block(c_in: int, c_out: int, kernel_size: int) -> nn.Sequential:
    """conv - BatchNorm - ReLU - maxpool 2x2: one block of :class:`SmallCNN`, ``(B, C, H, W) → (B, C', H/2, W/2)``."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=False),
            bn=nn.BatchNorm2d(c_out),
            relu=nn.ReLU(inplace=True),
            pool=nn.MaxPool2d(2),
        )
    )


@register_backbone("small")
class SmallCNN(nn.Sequential):
    """Blocks of conv 3x3 - BatchNorm - ReLU - maxpool 2x2: ``(B, C, H, W) → (B, C_last, H/2^k, W/2^k)``.

    The default ``channels=(32, 64, 128, 256)`` is the reference model of the benchmarks.

    Args:
        in_channels: ``C`` of the input frames.
        channels: output channels of each block.
        kernel_size: odd convolution size.
    """

    kind = "2d"
    sequential_forward = True  # forward checks the input, then runs its blocks in order: a plain chain

    def __init__(self, in_channels: int = 3, channels: tuple[int, ...] = (32, 64, 128, 256), kernel_size: int = 3):
        if kernel_size % 2 != 1:
            raise ConfigError(f"small backbone needs an odd kernel_size, got {kernel_size}")
        if not channels:
            raise ConfigError("small backbone needs at least one block: channels=(32, ...)")
        c_in = (in_channels, *channels)
        super().__init__(
            OrderedDict((f"block{i + 1}", _block(a, b, kernel_size)) for i, (a, b) in enumerate(zip(c_in, channels)))
        )
        self.in_channels = in_channels
        self.out_channels = channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(B, C, H, W)``. Returns ``(B, C_last, H/2^k, W/2^k)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            if x.dim() == 5:
                hint = ": a clip; wrap the CNN in cnnlstm.TimeDistributed"
            elif x.dim() == 4 and x.shape[-1] == self.in_channels:
                hint = f": channels last; pass x.permute(0, 3, 1, 2) = {(x.shape[0], x.shape[3], *x.shape[1:3])}"
            elif x.dim() == 4:
                hint = f": feed {self.in_channels}-channel images or build it with in_channels={x.shape[1]}"
            else:
                hint = ""
            raise ShapeError(f"SmallCNN wants images (B, C={self.in_channels}, H, W), got {tuple(x.shape)}{hint}")
        return super().forward(x)


@register_backbone("conv1d")
class Conv1dBackbone(nn.Module):
    """A stack of Conv1d - BatchNorm - ReLU over time: ``(N, T, F) → (N, T, F')``, ``T`` kept unless ``pool``.

    Args:
        in_features: ``F`` of the input series.
        channels: output channels of each layer; ``F'`` is the last.
        kernel_size: convolution size over time.
        dilated: dilations 1, 2, 4, ... (a wide receptive field for few layers).
        causal: pad on the left only, so step ``t`` sees steps ``<= t`` (streaming, forecasting).
        pool: max-pool time by this factor after the last layer (``T' = ceil(T / pool)``): a shorter
            sequence for the RNN on long series. Models with ``pool > 1`` cannot stream.
    """

    kind = "1d"

    def __init__(
        self,
        in_features: int = 1,
        channels: tuple[int, ...] = (64, 64, 64),
        kernel_size: int = 5,
        dilated: bool = False,
        causal: bool = False,
        pool: int = 1,
    ):
        super().__init__()
        if not isinstance(pool, int) or pool < 1:
            raise ConfigError(f"conv1d backbone pool must be a positive int, got {pool!r}")
        if not channels:
            raise ConfigError("conv1d backbone needs at least one layer: channels=(64, ...)")
        if not causal and kernel_size % 2 != 1:
            raise ConfigError(f"conv1d backbone needs an odd kernel_size unless causal=True, got {kernel_size}")
        self.in_features = in_features
        self.out_channels = channels[-1]
        self.causal = causal
        self.time_stride = pool  # output step i covers input steps [i * pool, (i + 1) * pool)
        self.layers = nn.ModuleList()
        self.pads: list[tuple[int, int]] = []
        c_in = in_features
        for i, c in enumerate(channels):
            dilation = 2**i if dilated else 1
            total = dilation * (kernel_size - 1)
            self.pads.append((total, 0) if causal else (total // 2, total - total // 2))
            self.layers.append(
                nn.Sequential(
                    OrderedDict(
                        conv=nn.Conv1d(c_in, c, kernel_size, dilation=dilation, bias=False),
                        bn=nn.BatchNorm1d(c),
                        relu=nn.ReLU(inplace=True),
                    )
                )
            )
            c_in = c

    def step(self, x: torch.Tensor, caches: list[torch.Tensor] | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One step of a causal stack: ``x`` ``(N, F)`` → ``(N, F')``, with each layer's last inputs cached.

        ``caches[i]`` ``(N, C_i, pad_i)`` holds layer ``i``'s previous inputs; zeros are exactly the layer's
        own causal padding, so a fresh (or reset) stream is a zero cache.
        """
        if not self.causal or self.time_stride > 1:
            raise ConfigError(
                "only a causal conv1d backbone without pooling (causal=True, pool=1) can run step by step"
            )
        y = x.unsqueeze(-1)  # (N, F, 1)
        new = []
        for i, ((left, _), layer) in enumerate(zip(self.pads, self.layers)):
            cache = caches[i] if caches is not None else y.new_zeros((y.shape[0], y.shape[1], left))
            inp = torch.cat([cache, y], dim=-1)  # (N, C_i, left + 1)
            new.append(inp[:, :, 1:] if left else cache)
            y = layer(inp)  # (N, C_{i+1}, 1): a valid convolution over exactly the receptive field
        return y.squeeze(-1), new

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Args: x ``(N, T, F)``; lengths: optional ``(N,)`` valid steps of a padded batch.

        Returns ``(N, T', F')`` with ``T' = ceil(T / pool)``. With ``lengths``, padded steps are zero after
        every layer and never win a pooling window, so a series gives the same output alone or padded.
        """
        if x.dim() != 3 or x.shape[-1] != self.in_features:
            hint = ""
            if x.dim() == 3 and x.shape[1] == self.in_features:
                hint = f": the features are on axis 1, pass x.transpose(1, 2) = {(x.shape[0], x.shape[2], x.shape[1])}"
            raise ShapeError(f"conv1d backbone wants series (N, T, F={self.in_features}), got {tuple(x.shape)}{hint}")
        y = x.transpose(1, 2)  # (N, F, T): the one place the series is channels-first
        valid = None
        if lengths is not None:
            valid = valid_mask(lengths.to(y.device), y.shape[-1]).unsqueeze(1)  # (N, 1, T)
        for pad, layer in zip(self.pads, self.layers):
            y = layer(F.pad(y, pad))  # (N, C_i, T)
            if valid is not None:
                y = y * valid  # padded steps stay zero, as the unpadded series' own padding is
        p = self.time_stride
        if p > 1:  # max over windows of p steps; padded steps never win (unfold exports with a dynamic T)
            if valid is not None:
                y = y.masked_fill(~valid, float("-inf"))
            y = F.pad(y, (0, p - 1), value=float("-inf")).unfold(-1, p, p).amax(-1)  # (N, C, ceil(T / p))
            if valid is not None:  # windows wholly past a series' end: zero, not -inf
                y = y.masked_fill(torch.isinf(y), 0.0)
        return y.transpose(1, 2)  # (N, T', F')


def time_stride(backbone: nn.Module) -> int:
    """Input steps per output step of a backbone: its declared ``time_stride`` (conv1d's ``pool``), else 1.

    The model reads it to rescale lengths (:func:`cnnlstm.lengths.pooled_lengths`), the builder to refuse a
    per-step head, and the streamer to refuse to stream.
    """
    return int(getattr(backbone, "time_stride", 1))


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a local ``.safetensors`` or PyTorch state dict into ``module`` (never runs code)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {str(path)!r} does not exist (weights load from a local path only)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    module.load_state_dict(state)


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


def build_backbone(spec: str | nn.Module, in_channels: int, **options) -> nn.Module:
    """Build a backbone from its name (or pass a module through).

    Args:
        spec: ``"small"``, ``"conv1d"``, ``"torchvision:NAME"``, ``"timm:NAME"`` or an ``nn.Module``.
        in_channels: ``C`` of the frames (``F`` of a series).
        options: the backbone's own options; ``weights="path"`` loads local weights for the adapters.

    Returns:
        The backbone module.
    """
    if isinstance(spec, nn.Module):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"backbone must be a name or an nn.Module, got {type(spec).__name__}")
    if spec.startswith("torchvision:"):
        name = spec.split(":", 1)[1]
        weights = options.pop("weights", None)
        tv = require("torchvision.models", "vision", f"backbone {spec!r}")
        model = tv.get_model(name, weights=None, **options)
        if weights is not None:
            load_weights(model, weights)
        trunk = _strip_classifier(model, name)
        return trunk
    if spec.startswith("timm:"):
        name = spec.split(":", 1)[1]
        weights = options.pop("weights", None)
        timm = require("timm", "vision", f"backbone {spec!r}")
        model = timm.create_model(name, pretrained=False, in_chans=in_channels, **options)
        if weights is not None:
            load_weights(model, weights)
        model.reset_classifier(0, "")
        return _TimmFeatures(model)
    cls = BACKBONES.get(spec)
    weights = options.pop("weights", None)
    try:
        module = cls(in_channels, **options)
    except TypeError as e:
        raise ConfigError(f"backbone {spec!r} does not take these options {sorted(options)}: {e}") from None
    if weights is not None:
        load_weights(module, weights)
    return module
