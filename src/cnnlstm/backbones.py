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
from .layers.time_distributed import _join, _tracing

__all__ = ["BACKBONES", "Conv1dBackbone", "SmallCNN", "build_backbone", "load_weights", "register_backbone"]

BACKBONES: Registry = Registry("backbone")
register_backbone = BACKBONES.register


class _BatchNormPoolReLU(torch.autograd.Function):
    """BatchNorm, then max-pool, then ReLU, for training: the forward of ``bn - relu - pool`` (ReLU commutes with
    max-pooling, so it runs on a quarter of the values), keeping for backward only what backward reads.

    The unfused chain keeps BatchNorm's full-size output alive until backward (ReLU and max-pool save it)
    and runs ReLU and its backward at full size. Here the BatchNorm output is freed as soon as it is
    pooled: max-pool's backward reads only the indices and the input's shape, which the BatchNorm input
    (kept for BatchNorm's backward anyway) has. On the reference model at batch 32 this cut a training
    step's peak memory from 4.8 to 3.6 GB. The kernels are PyTorch's own (native_batch_norm, max-pool with
    indices and their backwards; ReLU's backward keeps its 1-byte mask, not the output, so in-place ops on
    the output stay legal), so gradients equal the unfused chain's. Used for bfloat16;
    float32 runs :class:`_ChunkedBatchNormPoolReLU`, which keeps less again.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps, pool):
        y, mean, invstd = torch.native_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps)
        p, idx = torch.ops.aten.max_pool2d_with_indices(y, *pool)
        del y
        p.relu_()
        keep = p > 0  # ReLU's mask, not the output itself: in-place ops on the output stay legal (and 1 byte)
        ctx.save_for_backward(x, weight, running_mean, running_var, mean, invstd, idx, keep)
        ctx.training, ctx.eps, ctx.pool = training, eps, pool
        return p  # (B, C, H', W')

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight, running_mean, running_var, mean, invstd, idx, keep = ctx.saved_tensors
        grad = torch.where(keep, grad, 0)
        grad = torch.ops.aten.max_pool2d_with_indices_backward(grad, x, *ctx.pool, idx)  # x: shape and layout only
        mask = [True, ctx.needs_input_grad[1], ctx.needs_input_grad[2]]  # a frozen weight, a trained bias: fine
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            grad, x, weight, running_mean, running_var, mean, invstd, ctx.training, ctx.eps, mask
        )
        return gx, gw, gb, None, None, None, None, None, None


CHUNK_BYTES = 4 << 20  # frames per chunk of _ChunkedBatchNormPoolReLU: about this much of its input (in cache)


class _ChunkedBatchNormPoolReLU(torch.autograd.Function):
    """:class:`_BatchNormPoolReLU` for float32, keeping neither BatchNorm's output nor max-pool's indices.

    Forward takes the batch statistics in one pass, then normalizes and pools a few frames at a time
    (``CHUNK_BYTES`` of input, in cache), so no full-size normalized tensor exists. Backward recomputes
    each chunk's normalized values, pooled values and pooling indices (the same ops on the same values:
    the same indices; the output itself is not kept, so in-place ops on it stay legal), routes the
    gradient through ReLU and max-pool chunk by chunk, and finishes BatchNorm's backward in
    closed form, in place, chunk by chunk: ``gx = a·gz + b·x + c`` per channel, with its two sums per
    channel taken as the chunks pass (PyTorch's own BatchNorm backward kernel, asked for the weight and
    bias gradients only). The int64 indices (half the bytes of the input) and a second full-size
    gradient tensor are gone: on the reference model under mimalloc (as the command runs), a training
    step's peak memory went from 5.3 to 3.7 GB at batch 32 and from 1.6 to 1.0 GB at batch 8, at 3-4%
    more time per step (3.33 to 3.45 s at batch 32, side by side); not keeping the output either took
    batch 32 to 2.9 GB. Recomputing costs a normalization
    and a pooling per chunk; the in-cache chunks make up for part of it. Gradients equal the native
    chain's to float32 rounding (the sums run in another order).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps, pool):
        if training:  # batch statistics; the running ones (if any) move as BatchNorm moves them
            mean, var = torch.batch_norm_update_stats(x, running_mean, running_var, momentum)
            invstd = (var + eps).rsqrt()
        else:
            mean, invstd = running_mean, (running_var + eps).rsqrt()
        alpha = invstd if weight is None else invstd * weight
        beta = -mean * alpha if bias is None else bias - mean * alpha
        alpha, beta = alpha.view(1, -1, 1, 1), beta.view(1, -1, 1, 1)
        step = _chunk(x)
        p = _join([_norm_pool(c, alpha, beta, pool)[0] for c in x.split(step)])
        p.relu_()  # not saved: backward recomputes the pooled values, so in-place ops on the output stay legal
        ctx.save_for_backward(x, mean, invstd, alpha, beta)
        ctx.training, ctx.pool, ctx.step = training, pool, step
        return p  # (B, C, H', W')

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, mean, invstd, alpha, beta = ctx.saved_tensors
        gx = torch.empty_like(x)  # first the gradient w.r.t. BatchNorm's output, then, in place, w.r.t. x
        step = ctx.step
        gw = x.new_zeros(x.shape[1])  # sum(gz · x̂), x̂ = (x - mean) · invstd
        s1 = x.new_zeros(x.shape[1])  # sum(gz)
        for s in range(0, x.shape[0], step):
            xs, gs = x[s : s + step], gx[s : s + step]
            pooled, idx = _norm_pool(xs, alpha, beta, ctx.pool)  # forward's own ops: the same indices
            g = torch.ops.aten.threshold_backward(grad[s : s + step], pooled, 0)  # ReLU's: pooled > 0
            torch.ops.aten.max_pool2d_with_indices_backward.grad_input(g, xs, *ctx.pool, idx, grad_input=gs)
            # this chunk's share of both sums, in one of PyTorch's kernels (given the whole batch's statistics)
            _, w_part, b_part = torch.ops.aten.native_batch_norm_backward(
                gs, xs, None, None, None, mean, invstd, True, 0.0, [False, True, True]
            )
            gw += w_part
            s1 += b_part
        a = alpha.view(-1)  # invstd · weight, per channel
        if ctx.training:  # x moves the batch statistics too: gx = a·gz + b·x + c
            m = x.numel() // x.shape[1]
            b = -a * invstd * gw / m
            c = -a * s1 / m - b * mean
            b, c = b.view(1, -1, 1, 1), c.view(1, -1, 1, 1)
        for s in range(0, x.shape[0], step):
            gs = gx[s : s + step]
            if ctx.training:
                torch.addcmul(torch.addcmul(c, x[s : s + step], b), gs, alpha, out=gs)
            else:
                gs.mul_(alpha)
        gw = gw if ctx.needs_input_grad[1] else None
        gb = s1 if ctx.needs_input_grad[2] else None  # d/dbias = sum(gz)
        return gx, gw, gb, None, None, None, None, None, None


def _norm_pool(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, pool: tuple):
    """BatchNorm as ``x·alpha + beta`` (per channel, ``(1, C, 1, 1)``), then max-pool: ``(b, C, H, W)`` →
    pooled ``(b, C, H', W')`` and its int64 indices. Forward and backward both call it, so the recomputed
    indices are forward's."""
    return torch.ops.aten.max_pool2d_with_indices(torch.addcmul(beta, x, alpha), *pool)


def _chunk(x: torch.Tensor) -> int:
    """Frames of ``x`` ``(B, C, H, W)`` per chunk: about ``CHUNK_BYTES``."""
    return max(1, CHUNK_BYTES // max(1, x[0].numel() * x.element_size()))


class ConvBlock(nn.Sequential):
    """conv - BatchNorm - ReLU - maxpool: one block of :class:`SmallCNN`, ``(B, C, H, W) → (B, C', H/2, W/2)``.

    Runs as the plain chain of its four children, except when training on the CPU (float32, or bfloat16
    under autocast), where BatchNorm, ReLU and pooling run as one autograd step that keeps less for
    backward (same outputs and gradients; see ``_ChunkedBatchNormPoolReLU`` for float32,
    ``_BatchNormPoolReLU`` for bfloat16).
    """

    sequential_forward = True

    def _fusable(self, x: torch.Tensor) -> bool:
        # export, torch.compile and jit tracing record the plain chain (the fused step's loop would bake in
        # one batch size)
        conv, bn, relu, pool = (getattr(self, k, None) for k in ("conv", "bn", "relu", "pool"))
        return (
            torch.is_grad_enabled()
            and x.device.type == "cpu"
            and not _tracing()
            and type(conv) is nn.Conv2d
            and type(bn) is nn.BatchNorm2d
            and type(relu) is nn.ReLU
            and type(pool) is nn.MaxPool2d
            and not pool.return_indices
            and len(self) == 4
            and not any(m._forward_hooks or m._forward_pre_hooks for m in (self, conv, bn, relu, pool))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(B, C, H, W)``. Returns ``(B, C', H', W')``."""
        if not self._fusable(x):
            return super().forward(x)
        bn, pool = self.bn, self.pool
        y = self.conv(x)
        training = bn.training or bn.running_mean is None
        if (
            not y.requires_grad
            or y.dtype not in (torch.float32, torch.bfloat16)
            or y.numel() == 0
            or (training and y.numel() // y.shape[1] <= 1)  # BatchNorm2d's own error for one value per channel
        ):
            return pool(self.relu(bn(y)))
        momentum = 0.0 if bn.momentum is None else bn.momentum
        if bn.training and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:  # cumulative moving average, as BatchNorm2d does
                momentum = 1.0 / float(bn.num_batches_tracked)
        use_stats = not bn.training or bn.track_running_stats
        pair = torch.nn.modules.utils._pair
        args = (pair(pool.kernel_size), pair(pool.stride), pair(pool.padding), pair(pool.dilation))
        fn = _ChunkedBatchNormPoolReLU if y.dtype == torch.float32 else _BatchNormPoolReLU
        return fn.apply(
            y,
            bn.weight,
            bn.bias,
            bn.running_mean if use_stats else None,
            bn.running_var if use_stats else None,
            training,
            momentum,
            bn.eps,
            (*args, pool.ceil_mode),
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
    sequential_forward = True  # forward checks the input, then runs the blocks in order

    def __init__(self, in_channels: int = 3, channels: tuple[int, ...] = (32, 64, 128, 256), kernel_size: int = 3):
        if kernel_size % 2 != 1:
            raise ConfigError(f"small backbone needs an odd kernel_size, got {kernel_size}")
        if not channels:
            raise ConfigError("small backbone needs at least one block: channels=(32, ...)")
        blocks = []
        c_in = in_channels
        for i, c in enumerate(channels):
            block = ConvBlock(
                OrderedDict(
                    conv=nn.Conv2d(c_in, c, kernel_size, padding=kernel_size // 2, bias=False),
                    bn=nn.BatchNorm2d(c),
                    relu=nn.ReLU(inplace=True),
                    pool=nn.MaxPool2d(2),
                )
            )
            blocks.append((f"block{i + 1}", block))
            c_in = c
        super().__init__(OrderedDict(blocks))
        self.in_channels = in_channels
        self.out_channels = c_in

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
            valid = (torch.arange(y.shape[-1], device=y.device) < lengths.to(y.device).unsqueeze(1)).unsqueeze(1)
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
        tv = require("torchvision.models", "all", f"backbone {spec!r}")
        model = tv.get_model(name, weights=None, **options)
        if weights is not None:
            load_weights(model, weights)
        trunk = _strip_classifier(model, name)
        return trunk
    if spec.startswith("timm:"):
        name = spec.split(":", 1)[1]
        weights = options.pop("weights", None)
        timm = require("timm", "all", f"backbone {spec!r}")
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
