"""Bridges: from a CNN's feature maps to an RNN's sequence.

| name        | from                 | to                 |
|-------------|----------------------|--------------------|
| ``gap``     | ``(N, T, C, H, W)``  | ``(N, T, C)``      |
| ``gmp``     | ``(N, T, C, H, W)``  | ``(N, T, C)``      |
| ``grid``    | ``(N, T, C, H, W)``  | ``(N, T, C*k*k)``  |
| ``flatten`` | ``(N, T, C, H, W)``  | ``(N, T, C*H*W)``  |
| ``attention`` | ``(N, T, C, H, W)`` | ``(N, T, C)``     |
| ``spatial`` | ``(N, C, H, W)``     | ``(N, H*W, C)``    |
| ``none``    | ``(N, T, F)``        | ``(N, T, F)``      |

Each bridge reports its output feature size for an input shape without running
(:meth:`Bridge.out_features`), so the RNN's ``input_size`` is never typed by hand.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._messages import BRIDGES
from ..errors import ConfigError, ShapeError

__all__ = ["BRIDGES", "Bridge", "bridge", "register_bridge"]

# the table itself lives in cnnlstm._messages, so the fix texts that list the bridges need not import this module
register_bridge = BRIDGES.register


class Bridge(nn.Module):
    """A module from feature maps to a sequence that knows its output size.

    Subclasses set ``in_axes`` (the axes they take, ``"NTCHW"`` for clip bridges) and
    implement :meth:`out_features` and ``forward``. A clip bridge is named, with the ``F`` it
    gives, in the fix for clip maps fed to an RNN unless it sets ``suggested = False``; the
    fix text builds it with :meth:`example`.
    """

    in_axes = "NTCHW"
    name = "?"
    suggested = True

    @classmethod
    def example(cls, channels: int) -> Bridge:
        """This bridge with its default options, for feature maps of ``channels`` channels.

        >>> bridge("grid").example(64).out_features(64, 7, 7)
        256
        """
        return cls()

    @classmethod
    def for_features(cls, shape: tuple, **options) -> Bridge:
        """This bridge for the backbone's feature maps of ``shape`` (from a dry run): ``cls(**options)``, with
        whatever else the bridge needs to know of the maps taken from ``shape`` (attention: its channels).

        >>> bridge("attention", feature_shape=(1, 8, 64, 7, 7)).channels
        64
        """
        return cls(**options)

    def check_input(self, built: tuple, got: tuple) -> None:
        """Raise :class:`ShapeError` unless a model built for samples of shape ``built`` can take one of shape
        ``got`` through this bridge (canonical layout, without ``N``; the last two axes are ``H, W`` for
        images and frames). Most bridges take any frame size."""

    def out_features(self, c: int, h: int | None = None, w: int | None = None) -> int:
        """``F`` of the output sequence for feature maps of ``c`` channels and ``h x w`` positions."""
        raise NotImplementedError

    def output_shape(self, shape: tuple) -> tuple:
        """The output shape for an input ``shape`` (entries may be None), without running.

        >>> bridge("gap").output_shape((8, 16, 256, 7, 7))
        (8, 16, 256)
        """
        self.check_shape(shape)
        n, t, c, h, w = shape
        return (n, t, self.out_features(c, h, w))

    def options(self) -> dict:
        """The options that rebuild this bridge with :func:`bridge` (saved in a model's config)."""
        return {}

    def check_shape(self, shape: tuple) -> None:
        """Raise :class:`ShapeError` unless ``shape`` has this bridge's axes."""
        if len(shape) != len(self.in_axes):
            raise ShapeError(self._rank_message(tuple(shape)))

    def _rank_message(self, shape: tuple) -> str:
        axes = ", ".join(self.in_axes)
        msg = f"bridge {self.name!r} wants ({axes}), got {len(shape)}-D {shape}"
        if self.in_axes == "NTCHW" and len(shape) == 4:
            msg += (
                ": one image's feature maps, not a clip's. For an image whose positions are the sequence "
                "use bridge='spatial'; for clips keep the time axis: (N, T, C, H, W)."
            )
        elif self.in_axes == "NTCHW" and len(shape) == 3:
            msg += ": this already is a sequence (N, T, F); it needs no bridge (bridge='none')."
        return msg

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class _ClipBridge(Bridge):
    """Shared checks for bridges over clip feature maps ``(N, T, C, H, W)``."""

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 5:
            raise ShapeError(self._rank_message(tuple(x.shape)))


@register_bridge("gap")
class GlobalAvgPool(_ClipBridge):
    """Global average pooling per frame: ``(N, T, C, H, W) → (N, T, C)``. Keeps channels, drops layout."""

    name = "gap"

    def out_features(self, c: int, h: int | None = None, w: int | None = None) -> int:
        return c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return x.mean(dim=(-2, -1))  # (N, T, C)


@register_bridge("gmp")
class GlobalMaxPool(_ClipBridge):
    """Global max pooling per frame: ``(N, T, C, H, W) → (N, T, C)``."""

    name = "gmp"
    suggested = False  # gives what gap gives; the fix texts name gap

    def out_features(self, c: int, h: int | None = None, w: int | None = None) -> int:
        return c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return x.amax(dim=(-2, -1))  # (N, T, C)


@register_bridge("grid")
class GridPool(_ClipBridge):
    """Adaptive average pooling to ``k x k`` cells, then flatten: ``(N, T, C, H, W) → (N, T, C*k*k)``.

    Keeps a coarse layout at a small cost; works for any ``H, W``.

    Args:
        k: cells per side (default 2).
    """

    name = "grid"

    def __init__(self, k: int = 2):
        super().__init__()
        if k < 1:
            raise ConfigError(f"grid bridge needs k >= 1 cells per side, got k={k}")
        self.k = k

    def extra_repr(self) -> str:
        return f"k={self.k}"

    def options(self) -> dict:
        return {"k": self.k}

    def out_features(self, c: int, h: int | None = None, w: int | None = None) -> int:
        return c * self.k * self.k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        n, t, c, h, w = x.shape
        k = self.k
        if h % k == 0 and w % k == 0:  # equal cells: the same as adaptive pooling, and exports with a dynamic T
            y = x.reshape(n, t, c, k, h // k, k, w // k).mean(dim=(4, 6))  # (N, T, C, k, k)
            return y.flatten(2)  # "n t c i j -> n t (c i j)"
        y = F.adaptive_avg_pool2d(x.flatten(0, 1), k)  # (N*T, C, k, k)
        return y.flatten(1).unflatten(0, (n, t))  # "(n t) c i j -> n t (c i j)"


@register_bridge("flatten")
class Flatten(_ClipBridge):
    """Flatten each frame's maps: ``(N, T, C, H, W) → (N, T, C*H*W)``. Keeps everything, fixes ``H, W``."""

    name = "flatten"

    def check_input(self, built: tuple, got: tuple) -> None:
        if tuple(got[-2:]) != tuple(built[-2:]):
            raise ShapeError(
                f"bridge='flatten' was built for frames of H, W = {tuple(built[-2:])}, got {tuple(got[-2:])}: "
                "flatten fixes the frame size; resize the frames or use bridge='grid'/'gap'"
            )

    def out_features(self, c: int, h: int | None = None, w: int | None = None) -> int:
        if h is None or w is None:
            raise ShapeError("bridge 'flatten' needs fixed feature-map sizes H and W to know F = C*H*W")
        return c * h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return x.flatten(2)  # "n t c h w -> n t (c h w)"


@register_bridge("attention")
class SpatialAttention(_ClipBridge):
    """Learned spatial softmax per frame: ``(N, T, C, H, W) → (N, T, C)``.

    A 1x1 convolution scores every position; the softmax of the scores over the ``H*W``
    positions weights an average of the feature vectors. ``forward(x, return_attention=True)``
    also returns the maps ``(N, T, H, W)`` for plotting.

    Args:
        channels: ``C``, the backbone's output channels (:func:`cnnlstm.infer` tells it;
            :class:`cnnlstm.CNNLSTM` fills it in).
    """

    name = "attention"

    def __init__(self, channels: int | None = None):
        super().__init__()
        if channels is None:
            raise ConfigError(
                "bridge 'attention' needs channels=C, the backbone's output channels "
                "(cnnlstm.infer(backbone, input_shape) tells it; CNNLSTM fills it in for you)"
            )
        self.channels = channels
        self.score = nn.Conv2d(channels, 1, kernel_size=1)

    @classmethod
    def example(cls, channels: int) -> SpatialAttention:
        return cls(channels)

    @classmethod
    def for_features(cls, shape: tuple, channels: int | None = None) -> SpatialAttention:
        return cls(shape[2] if channels is None else channels)  # (N, T, C, H, W)

    def options(self) -> dict:
        return {"channels": self.channels}

    def output_shape(self, shape: tuple) -> tuple:
        self.check_shape(shape)
        if shape[2] is not None and shape[2] != self.channels:
            raise ShapeError(f"bridge 'attention' was built for C={self.channels} channels, got {tuple(shape)}")
        return super().output_shape(shape)

    def out_features(self, c: int, h: int | None = None, w: int | None = None) -> int:
        return c

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """Args: x ``(N, T, C, H, W)``. Returns ``(N, T, C)``, and the maps ``(N, T, H, W)`` if asked."""
        self._check(x)
        n, t, c, h, w = x.shape
        if c != self.channels:
            raise ShapeError(
                f"bridge 'attention' was built for C={self.channels} channels, got (N, T, C, H, W) = {tuple(x.shape)}: "
                f"build it with channels={c}"
            )
        frames = x.flatten(0, 1)  # (N*T, C, H, W)
        weights = self.score(frames).flatten(1).softmax(dim=-1)  # (N*T, H*W)
        pooled = torch.bmm(frames.flatten(2), weights.unsqueeze(-1)).squeeze(-1)  # (N*T, C)
        out = pooled.unflatten(0, (n, t))  # (N, T, C)
        if return_attention:
            return out, weights.reshape(n, t, h, w)  # (N, T, H, W)
        return out


@register_bridge("spatial")
class Spatial(Bridge):
    """One image's map as a sequence of positions, row-major: ``(N, C, H, W) → (N, H*W, C)``.

    Step ``i*W + j`` is position ``(i, j)``. Long sequences, every position kept.
    """

    name = "spatial"
    in_axes = "NCHW"

    def out_features(self, c: int, h: int | None = None, w: int | None = None) -> int:
        return c

    def output_shape(self, shape: tuple) -> tuple:
        self.check_shape(shape)
        n, c, h, w = shape
        return (n, None if h is None or w is None else h * w, c)

    def _rank_message(self, shape: tuple) -> str:
        msg = f"bridge 'spatial' wants one image's maps (N, C, H, W), got {len(shape)}-D {shape}"
        if len(shape) == 5:
            msg += ": a clip's maps. For clips use a per-frame bridge: bridge='gap', 'grid', 'flatten' or 'attention'."
        return msg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ShapeError(self._rank_message(tuple(x.shape)))
        return x.flatten(2).transpose(1, 2)  # "n c h w -> n (h w) c"


@register_bridge("none")
class Identity(Bridge):
    """No bridge, for backbones that already return a sequence: ``(N, T, F) → (N, T, F)``."""

    name = "none"
    in_axes = "NTF"

    def out_features(self, c: int, h: int | None = None, w: int | None = None) -> int:
        return c

    def output_shape(self, shape: tuple) -> tuple:
        self.check_shape(shape)
        return tuple(shape)

    def _rank_message(self, shape: tuple) -> str:
        msg = f"bridge 'none' wants a sequence (N, T, F), got {len(shape)}-D {shape}"
        if len(shape) == 5:
            msg += ": a clip of feature maps. Use bridge='gap', 'grid', 'flatten' or 'attention'."
        return msg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ShapeError(self._rank_message(tuple(x.shape)))
        return x


def bridge(name: str, *, feature_shape: tuple | None = None, **options) -> Bridge:
    """Build a bridge by name: ``gap``, ``gmp``, ``grid``, ``flatten``, ``attention``, ``spatial`` or ``none``.

    Args:
        name: the bridge's name.
        feature_shape: the feature maps it will take (e.g. ``(N, T, C, H, W)``, from a dry run), for a bridge
            that learns its sizes from them (:meth:`Bridge.for_features`); :class:`~cnnlstm.CNNLSTM` passes it.
        options: the bridge's own options (``k`` for ``grid``, ``channels`` for ``attention``).

    >>> bridge("grid", k=2)(torch.zeros(2, 4, 64, 7, 7)).shape
    torch.Size([2, 4, 256])
    """
    cls = BRIDGES.get(name)
    try:
        return cls(**options) if feature_shape is None else cls.for_features(tuple(feature_shape), **options)
    except TypeError as e:
        raise ConfigError(f"bridge {name!r} does not take these options {sorted(options)}: {e}") from None
