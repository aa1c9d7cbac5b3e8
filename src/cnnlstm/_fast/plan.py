"""How to run a per-frame module over a batch of folded frames fast: :func:`plan_for`, the one entry of ``_fast``.

Nothing runs differently from the plain module unless :func:`.graph.analyse` proved from the module's traced graph
that every operation in it is per frame and blind to memory format (prove or don't touch); otherwise, with the
switch off (:mod:`.switch`), under deterministic algorithms, hooks, export, tracing or ``torch.compile``, on
``meta`` tensors and off the CPU, the plan is the module itself.

For a proved module on the CPU, image frames ``(B, C, H, W)`` run in ``channels_last`` memory format (the frames
are converted, the output converted back where the frames were not channels-last; the module's weights are left
as they are). Training a chain (a graph that is a line of module calls) in a process whose glibc keeps its default
settings runs it chunk by chunk, so its activations stay in glibc's heap from step to step (:mod:`.chunked_train`);
elsewhere it runs all frames in one call, each BatchNorm2d - ReLU - MaxPool2d run as one autograd step that keeps
less for backward (:mod:`.train_block`). Either way BatchNorm sees the whole batch. Inference runs a few frames at a
time through an inference copy: the traced graph with each BatchNorm folded into the conv whose only user it is
(:func:`.graph.folded_graph`), and, for a chain without gradients, its leading convolutions on oneDNN's blocked
tensors (:mod:`.onednn`). Every plan is kept under the module's :func:`.graph.fingerprint` (structure, attributes,
modes, hooks, each tensor's identity and version), so any change to the module makes a new one.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable

import torch
from torch import nn

from . import switch
from .alloc import hint_untuned_training, raise_heap_threshold, top_pin, untuned
from .chunked_train import ChunkedChain, batch_statistics
from .graph import Facts, analyse, fingerprint, folded_graph
from .onednn import OneDNNPrefix, bf16_native
from .train_block import FusedChain

__all__ = ["CHUNK_PIXELS", "auto_chunk", "folded_copy", "leaves", "plan_for", "tracing", "train_in_chunks"]

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
    """The modules that ``module`` runs one after the other, as its traced graph proves (:func:`.graph.analyse`);
    None where its graph is not such a chain of known per-frame modules."""
    facts = analyse(module)
    return None if facts is None or facts.chain is None else [module.get_submodule(t) for t in facts.chain]


def folded_copy(module: nn.Module) -> nn.Module:
    """An eval-mode inference copy of ``module`` with BatchNorm folded where its data flow proves it
    (:func:`.graph.folded_graph`), channels-last; ``module`` itself where nothing is proved."""
    facts = analyse(copy.deepcopy(module).eval())
    if facts is None:
        return module
    return folded_graph(module, facts).to(memory_format=torch.channels_last)


def _hooked(module: nn.Module) -> bool:
    """True when a hook would see the module's submodules run (a copy or a fused step would skip it)."""
    hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    glob = nn.modules.module
    everywhere = (glob._global_forward_hooks, glob._global_forward_pre_hooks, glob._global_backward_hooks,
                  glob._global_backward_pre_hooks)  # fmt: skip
    return any(everywhere) or any(getattr(m, h) for m in module.modules() for h in hooks)


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
    """An inference copy of a module (:func:`.graph.folded_graph`) and, for a chain, its oneDNN prefix."""

    def __init__(self, module: nn.Module, facts: Facts):
        with torch.inference_mode(False), torch.no_grad():
            self.copy = folded_graph(module, facts).to(memory_format=torch.channels_last)
            chain = [n.target for n in self.copy.graph.nodes if n.op == "call_module"] if facts.chain else None
            chain = [self.copy.get_submodule(t) for t in chain] if chain else None
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


_FACTS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, Facts | None]] = weakref.WeakKeyDictionary()


def _facts(module: nn.Module, key: tuple) -> Facts | None:
    """:func:`.graph.analyse`'s facts of the module, traced again whenever its structure ``key`` changes."""
    return _cached(_FACTS, module, key, lambda: analyse(module))


def _inference(module: nn.Module, key: tuple, facts: Facts) -> _Inference:
    """The module's inference copy, built again whenever its fingerprint ``key`` (structure and tensors) changes."""
    return _cached(_INFERENCE, module, key, lambda: _Inference(module, facts))


def _channels_last(run: Plan) -> Plan:
    """``run`` on channels-last frames, its 4-D output made contiguous again where the frames were not
    channels-last (as the plain module's output would be)."""
    return _plain_format(lambda frames: run(frames.contiguous(memory_format=torch.channels_last)))


def _plain_format(run: Plan) -> Plan:
    """``run``, its 4-D output made contiguous where the frames were not channels-last."""
    return lambda frames: _as_plain(run(frames), frames)


def _as_plain(out, frames: torch.Tensor):
    if isinstance(out, torch.Tensor) and out.dim() == 4 and not frames.is_contiguous(memory_format=torch.channels_last):
        return out.contiguous()
    return out


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


def _chunked_chain(module: nn.Module, key: tuple, chain: list[nn.Module]) -> ChunkedChain:
    """``module``'s :class:`ChunkedChain`, kept while its structure ``key`` stays the same (it caches the frames
    per chunk for each frame shape)."""
    return _cached(_CHAINS, module, key, lambda: ChunkedChain(chain))


def _chunkable(module: nn.Module) -> bool:
    """True when frames may run a few at a time: no normalization that uses or moves statistics of its batch
    (:func:`.chunked_train.batch_statistics`), and no dropout that draws masks (training mode)."""
    return not batch_statistics(module) and not any(_draws(m) for m in module.modules())


def plan_for(module: nn.Module, frames: torch.Tensor, chunk_size: int | None = None) -> Plan:
    """How to run ``module`` on ``frames``: a callable ``frames (B, *in) -> (B, *out)``, outputs as the module's own.

    Args:
        module: a per-frame module; its mode (``module.training``) picks training or inference.
        frames: the batch the plan is for (read for its device, shape, dtype; not run).
        chunk_size: frames per call at inference; ``None`` picks it from the frame size (:func:`auto_chunk`).
            Training runs all frames in one call, so BatchNorm sees all of them.
    """
    if frames.device.type != "cpu" or frames.dim() != 4 or tracing() or not switch.enabled():
        return module  # a dry run, another device, a traced graph that must keep a dynamic batch, or switched off
    structure, tensors = fingerprint(module)
    facts = _facts(module, structure)
    if facts is None:  # nothing proved: run as written
        if module.training and torch.is_grad_enabled():
            hint_untuned_training(frames.nbytes)
        return module
    chunk = chunk_size or auto_chunk(frames)
    chunks = _chunkable(module)
    grads = torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters())
    training_mode = any(m.training for m in module.modules())
    if _hooked(module) or _inference_tensors(module):
        # hooks must fire (no copy, no fused step); inference tensors have no version to key a copy on: the module
        # itself, a few frames a call where its graph is per frame (TimeDistributed's chunk_size)
        return _chunked(module, chunk) if chunks and not training_mode else module
    if grads or training_mode:
        return _training(module, frames, structure, facts, chunk if chunks else None)
    raise_heap_threshold()  # the calls' buffers (a few frames each) then stay in glibc's heap
    run = _inference(module, (structure, tensors), facts)
    return _chunked(_plain_format(run), chunk, pinned=run)  # the put-together output, freed at the heap's top


def _training(module: nn.Module, frames: torch.Tensor, key: tuple, facts: Facts, chunk: int | None) -> Plan:
    """The plan with gradients, or in training mode: a chain through :class:`ChunkedChain` or :class:`FusedChain`,
    anything else as written. Outside a chain the module keeps the frames' own memory format: PyTorch's
    channels-last BatchNorm backward sums in float32, and on an ill-conditioned gradient (two BatchNorms in a row,
    global pooling) its input gradient was 4% of its scale from float64 where the contiguous one was within 3e-7.
    A module that draws dropout masks in training runs as written too (channels-last would draw other masks)."""
    if not torch.is_grad_enabled() or facts.chain is None or facts.strided_1x1:
        return module  # strided 1x1: oneDNN's channels-last weight gradient of such a conv is broken
    if any(_draws(m) for m in module.modules()):
        return module
    chain = [module.get_submodule(t) for t in facts.chain]
    if not _takes(chain, frames):
        return module
    if train_in_chunks(frames):
        chunked = _chunked_chain(module, key, chain)  # the module's own parameters, never a copy
        if chunked.whole_batch():  # a module with a BatchNorm inside: its activations are the whole batch's
            hint_untuned_training(frames.nbytes)
        run = _plain_format(chunked)
    elif FusedChain.applies(chain):
        run = _channels_last(FusedChain(chain))
        hint_untuned_training(frames.nbytes)
    else:
        return module
    return run if chunk is None else _chunked(run, chunk)


def _draws(m: nn.Module) -> bool:
    """True for a dropout module that draws masks (training mode): run in chunks, it would draw other ones."""
    return isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0
