"""Apply a per-frame module to every step of a sequence by folding time into the batch."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ..errors import ConfigError, ShapeError
from ..shapes.guard import shape_guard

__all__ = ["BN_POLICIES", "TimeDistributed", "freeze_batchnorm", "valid_mask"]

BN_POLICIES = ("train", "frozen")


def valid_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """A ``(N, T)`` boolean mask, True where step ``t < lengths[n]``.

    Args:
        lengths: ``(N,)`` integer lengths, each in ``1..T``.
        steps: ``T``.
    """
    return torch.arange(steps, device=lengths.device) < lengths.unsqueeze(1)  # (N, T)


def check_lengths(lengths: torch.Tensor | None, batch: int, steps: int, owner: str) -> torch.Tensor | None:
    """Validate ``lengths`` against a batch of ``batch`` sequences of ``steps`` steps.

    Returns:
        ``lengths`` as an int64 tensor, or None when none were given.
    """
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ShapeError(
            f"{owner}: lengths must be (N,) = ({batch},), one length per sequence, got {tuple(lengths.shape)}"
        )
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ShapeError(f"{owner}: lengths must be integers, got dtype {lengths.dtype}")
    if lengths.device.type != "meta" and lengths.numel():
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 1 or hi > steps:
            raise ShapeError(
                f"{owner}: every length must be in 1..T={steps} (the padded clip length), got min {lo}, max {hi}"
            )
    return lengths.long()


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm in ``module`` in eval mode and stop its parameters from training."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """An eval-mode copy of ``module`` with every ``Conv2d`` followed by a ``BatchNorm2d`` (adjacent
    children of a container, as in conv-BN-ReLU blocks) folded into one convolution; ``module`` itself
    when there is no such pair."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs = []
    for parent in module.modules():
        kids = list(parent.named_children())
        for (a, conv), (b, bn) in itertools.pairwise(kids):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                pairs.append((parent, a, b))
    if not pairs:
        return module
    names = {id(m): n for n, m in module.named_modules()}
    out = copy.deepcopy(module).eval()
    for parent, a, b in pairs:
        target = out.get_submodule(names[id(parent)]) if names[id(parent)] else out
        setattr(target, a, fuse_conv_bn_eval(getattr(target, a), getattr(target, b)))
        setattr(target, b, nn.Identity())
    return out.to(memory_format=torch.channels_last)


def _leaves(module: nn.Module) -> list[nn.Module] | None:
    """The modules that ``module`` runs one after the other, from nested ``nn.Sequential`` containers (and
    subclasses marked ``sequential_forward = True``); ``None`` when some forward is not a plain chain."""
    if isinstance(module, nn.Sequential) and (
        type(module).forward is nn.Sequential.forward or getattr(module, "sequential_forward", False)
    ):
        out: list[nn.Module] = []
        for child in module:
            sub = _leaves(child)
            if sub is None:
                return None
            out += sub
        return out
    return None if isinstance(module, nn.Sequential) else [module]


class _OneDNNPrefix:
    """The leading Conv2d / ReLU / MaxPool2d run of an eval-mode chain of modules on oneDNN's own blocked
    tensors (``Tensor.to_mkldnn``), with each convolution's weights reordered once into oneDNN's layout.

    PyTorch's dense convolution on the CPU reorders its weights on every call and its max-pooling also
    computes the indices that only training uses; on the blocked layout the convolutions of the reference
    model ran at 230-250 GFLOP/s (dense channels_last: 190-220) and max-pooling 3-4x faster (bench/speed.py).
    A ReLU before a max-pool runs after it (the two commute), on a quarter of the values. The outputs are
    those of the same oneDNN kernels. The rest of the chain runs as usual on the dense result.
    """

    def __init__(self, prefix: list[nn.Module], rest: list[nn.Module]):
        self.steps: list = []
        for m in prefix:
            if isinstance(m, nn.Conv2d):
                args = (list(m.padding), list(m.stride), list(m.dilation), m.groups)
                w = torch._C._nn.mkldnn_reorder_conv2d_weight(m.weight.detach().contiguous().to_mkldnn(), *args)
                b = None if m.bias is None else m.bias.detach().contiguous().to_mkldnn()
                self.steps.append(("conv", (w, b, *args)))
            elif isinstance(m, nn.ReLU):
                self.steps.append(("relu", ()))
            elif isinstance(m, nn.MaxPool2d):
                pool = ("maxpool", (m.kernel_size, m.stride, m.padding, 1, m.ceil_mode))
                if self.steps and self.steps[-1][0] == "relu":  # max-pool commutes with ReLU: ReLU on 1/4 the data
                    self.steps.insert(-1, pool)
                else:
                    self.steps.append(pool)
        self.rest = rest

    @staticmethod
    def supports(m: nn.Module) -> bool:
        if isinstance(m, nn.Conv2d):
            return (
                type(m).forward is nn.Conv2d.forward
                and m.padding_mode == "zeros"
                and not isinstance(m.padding, str)
                and m.weight.dtype == torch.float32
            )
        if isinstance(m, nn.MaxPool2d):
            return type(m).forward is nn.MaxPool2d.forward and not m.return_indices and m.dilation in (1, (1, 1))
        return type(m) in (nn.ReLU, nn.Identity) or (
            isinstance(m, nn.Dropout) and type(m).forward is nn.Dropout.forward
        )

    @classmethod
    def build(cls, module: nn.Module) -> _OneDNNPrefix | None:
        """The plan for an eval-mode ``module``, or ``None`` when it does not start with a convolution chain."""
        if not torch.backends.mkldnn.is_available():
            return None
        leaves = _leaves(module)
        if not leaves:
            return None
        n = 0
        while n < len(leaves) and cls.supports(leaves[n]):
            n += 1
        if not any(isinstance(m, nn.Conv2d) for m in leaves[:n]):
            return None
        return cls(leaves[:n], leaves[n:])

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) float32 -> (B, *out)
        x = frames.contiguous().to_mkldnn()
        for kind, a in self.steps:
            if kind == "conv":
                x = torch.mkldnn_convolution(x, *a)
            elif kind == "relu":
                x = torch.relu_(x)
            else:
                x = torch.max_pool2d(x, *a)
        x = x.to_dense()
        for m in self.rest:
            x = m(x)
        return x


class _Cache(list):
    """``[weights' versions, conv-BN-folded copy, its oneDNN plan]``: a plain attribute (not a submodule,
    not in the state dict) that copies and pickles as empty, so a copy builds its own from its own weights."""

    def __init__(self):
        super().__init__([None, None, None])

    def __deepcopy__(self, memo) -> _Cache:
        return _Cache()

    def __reduce__(self):
        return (_Cache, ())


def _join(parts: list[torch.Tensor]) -> torch.Tensor:
    """Chunks' outputs ``[(B_i, *out)]`` as one ``(sum B_i, *out)``."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


def _one_tensor(y, module: nn.Module) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise ConfigError(
            f"TimeDistributed({type(module).__name__}): the module must return one tensor per batch of "
            f"frames, got {type(y).__name__}; wrap it to return the feature map you want"
        )
    return y


def _tracing() -> bool:
    """True while torch.export, torch.compile or torch.jit.trace records the forward."""
    return torch.compiler.is_exporting() or torch.compiler.is_compiling() or torch.jit.is_tracing()


def _auto_chunk(frames: torch.Tensor) -> int:
    """Frames per call at inference: about 4 frames of 112x112 (50,176 pixels), at least 1."""
    if frames.dim() != 4:
        return frames.shape[0]
    return max(1, (4 * 112 * 112) // (frames.shape[-1] * frames.shape[-2]))


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

    Speed: on the CPU, image frames ``(B, C, H, W)`` run in ``channels_last`` memory format
    (the module's weights are converted once), and in eval mode in chunks, through a copy of
    the module with each BatchNorm folded into its convolution (rebuilt when weights change).
    Without gradients, the copy's leading Conv2d/ReLU/MaxPool2d chain runs on oneDNN's blocked
    tensors with its weights reordered once (``_OneDNNPrefix``). On a 2-core CPU this made the
    reference model's inference about 4x and its training step about 1.5x faster than folding
    all NCHW frames at once (``bench/speed.py``); the outputs agree to float32 rounding.

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
        self._channels_last = False
        self._fused = _Cache()  # [weights' versions, conv-BN-folded copy, its oneDNN plan]
        if bn == "frozen":
            freeze_batchnorm(module)

    def train(self, mode: bool = True) -> TimeDistributed:
        super().train(mode)
        if self.bn == "frozen":
            freeze_batchnorm(self.module)
        return self

    def extra_repr(self) -> str:
        return f"bn={self.bn!r}, chunk_size={self.chunk_size}"

    def _call(self, frames: torch.Tensor) -> torch.Tensor:
        return _one_tensor(self.module(frames), self.module)

    def _inference_module(self) -> nn.Module:
        """The module with each BatchNorm folded into the convolution before it (eval mode only).

        Rebuilt whenever a weight or statistic changes (tensor versions); the module itself when
        it has no Conv2d-BatchNorm2d pair to fold, or hooks (they would not fire on a copy).
        """
        key = tuple(t._version for t in (*self.module.parameters(), *self.module.buffers()))
        if self._fused[0] != key:
            fused, plan = self.module, None
            if not any(m._forward_hooks or m._forward_pre_hooks for m in self.module.modules()):
                with torch.inference_mode(False), torch.no_grad():
                    fused = fold_batchnorm(self.module)
                    plan = _OneDNNPrefix.build(fused)
            self._fused[:] = [key, fused, plan]
        return self._fused[1]

    def _run(self, frames: torch.Tensor) -> torch.Tensor:  # (B, *in) -> (B, *out)
        if frames.device.type == "meta" or _tracing():
            return self._call(frames)  # a dry run, or a traced graph that must keep a dynamic N*T
        images = frames.dim() == 4 and frames.device.type == "cpu"
        if images and not self._channels_last:
            with torch.inference_mode(False), torch.no_grad():  # the weights must stay trainable tensors
                self.module.to(memory_format=torch.channels_last)  # once: NCHW convolutions pay reorders on CPU
            self._channels_last = True
        if self.training:  # one call: BatchNorm's statistics over all N*T frames
            return self._call(frames.contiguous(memory_format=torch.channels_last) if images else frames)
        chunk = self.chunk_size or _auto_chunk(frames)
        if images:
            run = self._inference_module()
            plan = self._fused[2]
            if (
                plan is not None
                and frames.dtype == torch.float32
                and not torch.is_grad_enabled()
                and not torch.is_autocast_enabled("cpu")
            ):
                try:
                    return _join([plan(c) for c in frames.split(chunk)])
                except RuntimeError:
                    pass  # a shape the module rejects: the dense path below raises its own error
            parts = [
                _one_tensor(run(c.contiguous(memory_format=torch.channels_last)), self.module)
                for c in frames.split(chunk)
            ]
        else:
            parts = [self._call(c) for c in frames.split(chunk)]
        return _join(parts)

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
        with shape_guard(self.module, (n * t, *x.shape[2:]), name=f"TimeDistributed({type(self.module).__name__})"):
            if lengths is not None and x.device.type != "meta" and bool((lengths < t).any()):
                mask = valid_mask(lengths.to(x.device), t)  # (N, T)
                y = self._run(x[mask])  # (V, *out), V = lengths.sum()
                out = y.new_zeros((n, t, *y.shape[1:]))
                out[mask] = y
                return out  # (N, T, *out)
            y = self._run(x.flatten(0, 1))  # (N*T, *out)
            return y.unflatten(0, (n, t))  # (N, T, *out)
