"""Clip transforms on tensors, the same for every frame of a clip."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ClipTransform"]


@dataclass
class ClipTransform:
    """uint8 frames ``(T, H, W, C)`` → normalised float ``(T, C, H, W)``, with optional augmentation.

    Args:
        crop_scale: for training, a random resized crop of this range of the frame's area
            (the same crop for every frame), resized back to ``(H, W)``; None: no crop.
        flip: random horizontal flip (the same for every frame). Off by default: it changes
            the meaning of left/right motion.
        color: for training, colour jitter of this strength (brightness, contrast and saturation each
            scaled by a factor in ``[1 - color, 1 + color]``, the same for every frame); None: none.
        mean, std: per-channel normalisation after scaling to ``[0, 1]``.
        seed: seeds the augmentation's random numbers (None: fresh randomness).
    """

    crop_scale: tuple[float, float] | None = None
    flip: bool = False
    color: float | None = None
    mean: tuple[float, ...] = (0.45, 0.45, 0.45)
    std: tuple[float, ...] = (0.225, 0.225, 0.225)
    seed: int | None = None

    def __post_init__(self):
        self._rng = np.random.default_rng(self.seed)

    def __call__(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(frames)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (T, H, W, C) -> (T, C, H, W)
        _t, c, h, w = x.shape
        if self.crop_scale is not None:
            area = self._rng.uniform(*self.crop_scale) * h * w
            ratio = np.exp(self._rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            ch = int(round(min(h, np.sqrt(area / ratio))))
            cw = int(round(min(w, np.sqrt(area * ratio))))
            top = int(self._rng.integers(0, h - ch + 1))
            left = int(self._rng.integers(0, w - cw + 1))
            x = x[:, :, top : top + ch, left : left + cw]  # (T, C, ch, cw)
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)  # (T, C, H, W)
        if self.flip and self._rng.random() < 0.5:
            x = x.flip(-1)
        if self.color:
            x = self._jitter(x)
        mean = torch.tensor(self.mean[:c] if len(self.mean) >= c else self.mean[:1] * c).view(1, c, 1, 1)
        std = torch.tensor(self.std[:c] if len(self.std) >= c else self.std[:1] * c).view(1, c, 1, 1)
        return (x - mean) / std  # (T, C, H, W)

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast and saturation of ``(T, C, H, W)`` in ``[0, 1]``, one draw for the whole clip."""
        b, c, s = self._rng.uniform(1 - self.color, 1 + self.color, 3)
        x = x * float(b)
        mean = x.mean(dim=(1, 2, 3), keepdim=True).mean(dim=0, keepdim=True)  # one level for the clip: no flicker
        x = (x - mean) * float(c) + mean
        if x.shape[1] == 3:
            gray = x.mean(dim=1, keepdim=True)
            x = (x - gray) * float(s) + gray
        return x.clamp_(0.0, 1.0)
