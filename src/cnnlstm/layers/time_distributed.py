"""Apply a per-frame module to every step of a sequence by folding time into the batch."""

from __future__ import annotations

import torch
from torch import nn

from .._fast import plan_for
from ..errors import ConfigError, ShapeError
from ..lengths import check_lengths, valid_mask
from ..shapes.guard import shape_guard

__all__ = ["BN_POLICIES", "TimeDistributed", "freeze_batchnorm"]

BN_POLICIES = ("train", "frozen")


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm in ``module`` in eval mode and stop its parameters from training."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)


def _one_tensor(y, module: nn.Module) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise ConfigError(
            f"TimeDistributed({type(module).__name__}): the module must return one tensor per batch of "
            f"frames, got {type(y).__name__}; wrap it to return the feature map you want"
        )
    return y


class TimeDistributed(nn.Module):
    """Apply ``module`` to every step of ``(N, T, *)`` in one folded call.

    Time is folded into the batch (``"n t ... -> (n t) ..."``, a view where the input is
    contiguous), the module runs once on all ``N*T`` frames, and the result is unfolded.
    A BatchNorm inside therefore takes its statistics over all ``N*T`` frames.

    Args:
        module: any per-frame module, ``(B, *in) -> (B, *out)``.
        bn: BatchNorm policy. ``"train"`` (default) trains BatchNorm as usual; ``"frozen"``
            keeps every BatchNorm in eval mode (running statistics, no updates, affine
            parameters not trained), the safe choice for a pretrained backbone whose
            statistics should not be overwritten by ``N*T`` correlated frames.
        chunk_size: frames per call in eval mode. ``None`` (default) picks it from the frame
            size (about 4 frames of 112x112: the activations of a chunk stay near the CPU's
            caches); a large number folds all frames at once. Train mode always folds all frames
            at once, so BatchNorm sees all of them.

    Speed: how the folded frames run is :func:`cnnlstm._fast.plan_for`'s choice. On the CPU, image
    frames ``(B, C, H, W)`` run in ``channels_last`` memory format; in eval mode in chunks, through
    an inference copy of the module with each BatchNorm folded into its convolution (rebuilt when
    weights change; the module itself is never modified); in training, conv - BatchNorm - ReLU -
    max-pool runs keep less for backward. Outputs agree with the plain module's to float32 rounding;
    ``bench/speed.py`` measures the gain.

    Shapes:
        x: ``(N, T, *in)``; lengths: optional ``(N,)``, valid steps per sequence. With
        lengths, padded frames are not run through the module (they come out as zeros)
        and do not enter BatchNorm statistics.

        returns: ``(N, T, *out)``.

    >>> td = TimeDistributed(nn.Conv2d(3, 8, 3, padding=1))
    >>> td(torch.zeros(2, 5, 3, 16, 16)).shape
    torch.Size([2, 5, 8, 16, 16])
    """

    def __init__(self, module: nn.Module, bn: str = "train", chunk_size: int | None = None):
        super().__init__()
        if bn not in BN_POLICIES:
            raise ConfigError(f"unknown BatchNorm policy bn={bn!r}: expected one of {', '.join(BN_POLICIES)}")
        if chunk_size is not None and chunk_size < 1:
            raise ConfigError(f"chunk_size must be a positive number of frames or None, got {chunk_size}")
        self.module = module
        self.bn = bn
        self.chunk_size = chunk_size
        if bn == "frozen":
            freeze_batchnorm(module)

    def train(self, mode: bool = True) -> TimeDistributed:
        super().train(mode)
        if self.bn == "frozen":
            freeze_batchnorm(self.module)
        return self

    def extra_repr(self) -> str:
        return f"bn={self.bn!r}, chunk_size={self.chunk_size}"

    def _run(self, frames: torch.Tensor) -> torch.Tensor:  # (B, *in) -> (B, *out)
        plan = plan_for(self.module, frames, self.chunk_size)
        return _one_tensor(plan(frames), self.module)

    def step(self, frame: torch.Tensor, caches: None = None) -> tuple[torch.Tensor, None]:
        """One step of a stream: the module on one frame of each sequence, ``(N, *in) → (N, *out)``.

        A per-frame module carries nothing from step to step (``caches`` stays None), unlike a causal
        convolution over time (:meth:`cnnlstm.Conv1dBackbone.step`).
        """
        return self.module(frame), caches

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Args: x ``(N, T, *in)``; lengths optional ``(N,)``. Returns ``(N, T, *out)``."""
        if not isinstance(x, torch.Tensor) or x.dim() < 3:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ShapeError(
                f"TimeDistributed({type(self.module).__name__}) wants (N, T, ...) with at least 3 axes, got {got}. "
                "For a single image batch call the module directly; for one clip add the batch axis: x.unsqueeze(0)."
            )
        n, t = x.shape[:2]
        lengths = check_lengths(lengths, n, t, f"TimeDistributed({type(self.module).__name__})")
        try:
            return self._forward(x, lengths, n, t)
        except ShapeError as e:
            if x.dim() != 4 or not any(isinstance(m, nn.Conv2d) for m in self.module.modules()):
                raise
            raise ShapeError(
                f"TimeDistributed({type(self.module).__name__}) expected a clip (N, T, C, H, W), got 4-D "
                f"{tuple(x.shape)}, which it reads as N={n} clips of T={t} frames {tuple(x.shape[2:])}. For one clip "
                "add the batch axis: x.unsqueeze(0); for a batch of images call the module itself. "
                f"({e})"
            ) from None

    def _forward(self, x: torch.Tensor, lengths: torch.Tensor | None, n: int, t: int) -> torch.Tensor:
        with shape_guard(self.module, (n * t, *x.shape[2:]), name=f"TimeDistributed({type(self.module).__name__})"):
            if lengths is not None and x.device.type != "meta" and bool((lengths < t).any()):
                mask = valid_mask(lengths.to(x.device), t)  # (N, T)
                y = self._run(x[mask])  # (V, *out), V = lengths.sum()
                out = y.new_zeros((n, t, *y.shape[1:]))
                out[mask] = y
                return out  # (N, T, *out)
            y = self._run(x.flatten(0, 1))  # (N*T, *out)
            return y.unflatten(0, (n, t))  # (N, T, *out)
