"""How to run a per-frame module over a batch of folded frames fast: :func:`plan_for`, the one entry of ``_fast``.

On the CPU, image frames ``(B, C, H, W)`` run in ``channels_last`` memory format (the frames are converted; the
module's weights are left as they are). Training a plain chain in a process whose glibc keeps its default
settings runs it chunk by chunk, so its activations stay in glibc's heap from step to step (:mod:`.chunked_train`);
elsewhere it runs all frames in one call, each BatchNorm2d - ReLU - MaxPool2d run as one autograd step that keeps
less for backward (:mod:`.train_block`). Either way BatchNorm sees the whole batch. Inference runs a few
frames at a time through an inference copy of the module: BatchNorm folded into the convolutions (:mod:`.fold`),
``channels_last``, and without gradients its leading convolution chain on oneDNN's blocked tensors
(:mod:`.onednn`); the copy is rebuilt when a weight or statistic of the module changes. Under export, tracing or
``torch.compile``, on ``meta`` tensors, and for modules with hooks, the plan is the module itself.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import nn

from .alloc import hint_untuned_training, raise_heap_threshold, top_pin, untuned
from .chunked_train import ChunkedChain
from .fold import folded_copy
from .onednn import OneDNNPrefix, bf16_native
from .train_block import FusedChain

__all__ = ["CHUNK_PIXELS", "auto_chunk", "plan_for", "tracing", "train_in_chunks"]

Plan = Callable[[torch.Tensor], object]  # frames (B, *in) -> the module's output for them, (B, *out)
CHUNK_PIXELS = 4 * 112 * 112  # frames per inference call: about 4 frames of 112x112, near the CPU's caches


def tracing() -> bool:
    """True while torch.export, torch.compile or torch.jit.trace records the forward."""
    return torch.compiler.is_exporting() or torch.compiler.is_compiling() or torch.jit.is_tracing()


def auto_chunk(frames: torch.Tensor) -> int:
    """Frames per call at inference for ``frames`` ``(B, *in)``: ``CHUNK_PIXELS`` of image frames, at least 1;
    all ``B`` of anything else."""
    if frames.dim() != 4:
        return frames.shape[0]
    return max(1, CHUNK_PIXELS // (frames.shape[-1] * frames.shape[-2]))


def leaves(module: nn.Module) -> list[nn.Module] | None:
    """The modules that ``module`` runs one after the other, from nested ``nn.Sequential`` containers (and
    subclasses marked ``sequential_forward = True``); ``None`` when some forward is not a plain chain."""
    if isinstance(module, nn.Sequential) and (
        type(module).forward is nn.Sequential.forward or getattr(module, "sequential_forward", False)
    ):
        out: list[nn.Module] = []
        for child in module:
            sub = leaves(child)
            if sub is None:
                return None
            out += sub
        return out
    return None if isinstance(module, nn.Sequential) else [module]


def _hooked(module: nn.Module) -> bool:
    """True when a hook would see the module's submodules run (a copy or a fused step would skip it)."""
    hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return any(getattr(m, h) for m in module.modules() for h in hooks)


def _inference_tensors(module: nn.Module) -> bool:
    """True when a parameter or buffer of ``module`` is an inference tensor (made under ``torch.inference_mode``):
    it keeps no version counter, so a change in place (``load_state_dict`` under inference mode) could not be told
    from the inference copy's weights, and the module runs as it is."""
    return any(t.is_inference() for t in (*module.parameters(), *module.buffers()))


def _takes(chain: list[nn.Module], frames: torch.Tensor) -> bool:
    """False when the chain's first convolution wants other channels than the frames': the module's own forward
    then runs, to raise its own error."""
    first = next((m for m in chain if isinstance(m, nn.Conv2d)), None)
    return first is None or first.in_channels == frames.shape[1]


class _Inference:
    """An inference copy of a module (:func:`folded_copy`) and, where it applies, its oneDNN prefix."""

    def __init__(self, module: nn.Module):
        with torch.inference_mode(False), torch.no_grad():
            self.copy = folded_copy(module)
            chain = leaves(self.copy)
            self.onednn = OneDNNPrefix(chain) if chain and OneDNNPrefix.applies(chain) else None
            self.chain = chain
        self.pin = None  # a block held at glibc's heap top between calls (untuned processes)

    def __call__(self, frames: torch.Tensor):
        dtype = _blocked_dtype(frames)
        if self.onednn is not None and dtype is not None and _takes(self.chain, frames):
            return self.onednn(frames, dtype)
        return self.copy(frames.contiguous(memory_format=torch.channels_last))


def _blocked_dtype(frames: torch.Tensor) -> torch.dtype | None:
    """The dtype the oneDNN prefix runs ``frames`` in without gradients: float32 outside autocast, bfloat16 under
    a CPU bfloat16 autocast where oneDNN computes it natively; None where the dense copy runs instead."""
    if torch.is_grad_enabled() or frames.dtype not in (torch.float32, torch.bfloat16):
        return None
    if not torch.is_autocast_enabled("cpu"):
        return torch.float32 if frames.dtype == torch.float32 else None
    if torch.get_autocast_dtype("cpu") == torch.bfloat16 and bf16_native():
        return torch.bfloat16
    return None


_INFERENCE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, _Inference]] = weakref.WeakKeyDictionary()


def _cached(store: weakref.WeakKeyDictionary, module: nn.Module, key: tuple, build: Callable[[], object]):
    """``store[module]``'s value while its key is ``key``, else ``build()`` kept under ``key``."""
    hit = store.get(module)
    if hit is None or hit[0] != key:
        hit = (key, build())
        store[module] = hit
    return hit[1]


def _inference(module: nn.Module) -> _Inference:
    """The module's inference copy, built again whenever one of its tensors is replaced or changed in place."""
    key = tuple((id(t), t._version) for t in (*module.parameters(), *module.buffers()))
    return _cached(_INFERENCE, module, key, lambda: _Inference(module))


def _channels_last(run: Plan) -> Plan:
    return lambda frames: run(frames.contiguous(memory_format=torch.channels_last))


def _chunked(run: Plan, chunk: int, pinned: _Inference | None = None) -> Plan:
    """``run`` on ``chunk`` frames at a time, the outputs put together. With ``pinned``, a block is kept at glibc's
    heap top above the call's buffers (:func:`.alloc.top_pin`, in ``pinned.pin``) before they are freed."""

    def plan(frames: torch.Tensor):
        parts = [run(c) for c in frames.split(chunk)]
        if len(parts) == 1 or not all(isinstance(p, torch.Tensor) for p in parts):
            out = parts[0]  # one chunk, or not a tensor: the caller judges the module's output
        else:
            out = torch.cat(parts, dim=0)  # (B, *out)
        if pinned is not None:
            pinned.pin = top_pin(pinned.pin)
        return out

    return plan


def train_in_chunks(frames: torch.Tensor) -> bool:
    """Whether a chain trains on ``frames`` chunk by chunk (:class:`ChunkedChain`): float32 outside autocast, in a
    process whose glibc keeps its default thresholds (where whole-batch activations would be mapped afresh each
    step); a process with a tuned allocator runs the whole batch in one call, which is as fast there."""
    return frames.dtype == torch.float32 and not torch.is_autocast_enabled("cpu") and untuned()


_CHAINS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, ChunkedChain]] = weakref.WeakKeyDictionary()


def _chunked_chain(module: nn.Module, chain: list[nn.Module]) -> ChunkedChain:
    """``module``'s :class:`ChunkedChain`, kept while its chain of modules stays the same (it caches the frames
    per chunk for each frame shape)."""
    return _cached(_CHAINS, module, tuple(map(id, chain)), lambda: ChunkedChain(chain))


def plan_for(module: nn.Module, frames: torch.Tensor, chunk_size: int | None = None) -> Plan:
    """How to run ``module`` on ``frames``: a callable ``frames (B, *in) -> (B, *out)``, outputs as the module's own.

    Args:
        module: a per-frame module; its mode (``module.training``) picks training or inference.
        frames: the batch the plan is for (read for its device, shape, dtype; not run).
        chunk_size: frames per call at inference; ``None`` picks it from the frame size (:func:`auto_chunk`).
            Training runs all frames in one call, so BatchNorm sees all of them.
    """
    if frames.device.type == "meta" or tracing():
        return module  # a dry run, or a traced graph that must keep a dynamic batch
    chunk = chunk_size or auto_chunk(frames)
    if not (frames.dim() == 4 and frames.device.type == "cpu"):
        return module if module.training else _chunked(module, chunk)
    hooked = _hooked(module)
    if module.training or (torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters())):
        chain = None if hooked or not torch.is_grad_enabled() else leaves(module)
        chain = chain if chain is not None and _takes(chain, frames) else None
        if chain is not None and train_in_chunks(frames):
            run = _chunked_chain(module, chain)  # the module's own parameters, never a copy
            if run.whole_batch():  # a module with a BatchNorm inside: its activations are the whole batch's
                hint_untuned_training(frames.nbytes)
        else:
            run = _channels_last(FusedChain(chain) if chain and FusedChain.applies(chain) else module)
            hint_untuned_training(frames.nbytes)
        return run if module.training else _chunked(run, chunk)
    if hooked or any(m.training for m in module.modules()) or _inference_tensors(module):
        # hooks must fire; a module in training mode stays so; inference tensors cannot key an inference copy
        return _chunked(_channels_last(module), chunk)
    raise_heap_threshold()  # the calls' buffers (a few frames each) then stay in glibc's heap
    run = _inference(module)
    return _chunked(run, chunk, pinned=run)  # the put-together output, freed at the heap's top, is not trimmed
