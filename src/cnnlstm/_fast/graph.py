"""What the fast path may do with a per-frame module, read from its data flow: :func:`analyse`.

The module is traced by ``torch.fx`` (a copy of it, so that a forward that stores things on its module stores them
on the copy). Every node of the graph must be an operation this file knows to be

* per frame: its output for a frame depends on that frame alone (so frames may run a few at a time at inference);
* blind to memory format: it gives the same values for a ``channels_last`` input (so frames may run channels-last).

BatchNorm in training mode, the one operation here that mixes frames, is known and handled by the callers (it sees
the whole batch). A module that cannot be traced, or whose graph holds anything else (a ``view``, an indexing, a
call this file does not list, a module type of the user's), gets no facts: the plain module runs as written. The
rule is: prove or don't touch.

The facts: the graph itself; the chain of modules when the graph is a straight line of module calls (each taking
the previous one's output alone); and which Conv2d - BatchNorm2d pairs may be folded at inference, by the data flow
(a conv called once, whose only user is a BatchNorm2d called once, whose only input is that conv), as PyTorch's own
fuser (``torch.fx.experimental.optimization.fuse``) decides, plus the check that neither module is called twice.
"""

from __future__ import annotations

import copy
import functools
import operator
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.nn import functional as F

__all__ = ["Facts", "analyse", "fingerprint", "folded_graph"]

# module types whose forward is per frame and blind to memory format (exact types: a subclass may override forward).
# GroupNorm and InstanceNorm are per frame, but PyTorch's channels-last kernels for them took their statistics less
# exactly (an output 1.3e-4 of its scale from float64 where the contiguous one was within 3e-6): left out
PER_FRAME_MODULES: tuple[type, ...] = (
    nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU,
    nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.ELU, nn.Mish, nn.PReLU, nn.MaxPool2d, nn.AvgPool2d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten, nn.Linear,
    nn.Upsample, nn.ZeroPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.ConstantPad2d,
)  # fmt: skip
# functions and methods of that kind; more need reading of their arguments (_per_frame_call)
PER_FRAME_FUNCTIONS = {
    operator.add, operator.mul, operator.sub, operator.truediv, operator.iadd, operator.imul, operator.isub,
    torch.add, torch.mul, torch.sub, torch.relu, torch.sigmoid, torch.tanh, F.relu, F.relu6, F.silu, F.gelu,
    F.leaky_relu, F.hardswish, F.sigmoid, F.tanh, F.adaptive_avg_pool2d, F.elu,
}  # fmt: skip
PER_FRAME_METHODS = {"relu", "relu_", "sigmoid", "tanh", "add", "add_", "mul", "mul_", "sub", "contiguous"}


@dataclass
class Facts:
    """What :func:`analyse` proved of a module (its mode at the time: training or eval)."""

    graph: fx.Graph  # the traced graph, of a copy of the module (names of submodules are the module's own)
    chain: list[str] | None  # the submodules called one after the other, when the graph is such a line
    folds: list[tuple[str, str]]  # (conv, bn) pairs foldable at inference
    strided_1x1: bool  # a strided 1x1 conv of few input channels per group: oneDNN's channels-last bug (below)


def _flatten_start(node: fx.Node) -> int:
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    return start if isinstance(start, int) else 0


def _per_frame_call(node: fx.Node) -> bool:
    """True for a ``call_function`` / ``call_method`` node that is per frame and blind to memory format."""
    if node.op == "call_function":
        if node.target in PER_FRAME_FUNCTIONS:
            return not (node.target is F.adaptive_avg_pool2d and node.kwargs)
        if node.target in (torch.cat, torch.concat):
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            return isinstance(dim, int) and dim >= 1  # a negative dim could be the batch's
        if node.target is torch.flatten:
            return _flatten_start(node) >= 1
        return False
    if node.target == "flatten":
        return _flatten_start(node) >= 1
    return node.target in PER_FRAME_METHODS


def _per_frame_module(m: nn.Module) -> bool:
    if type(m) not in PER_FRAME_MODULES:
        return False
    if isinstance(m, nn.Flatten):
        return m.start_dim >= 1
    if isinstance(m, nn.MaxPool2d | nn.AdaptiveMaxPool2d):
        return not m.return_indices
    return True


def _sequential(m: nn.Module) -> bool:
    """True for an ``nn.Sequential`` subclass that declares ``sequential_forward = True``: its forward checks its
    input's shape (which a symbolic trace cannot follow), then runs its children in order, as cnnlstm's own
    ``SmallCNN`` does. It is traced as ``nn.Sequential.forward``."""
    return isinstance(m, nn.Sequential) and getattr(m, "sequential_forward", False) is True


class _Tracer(fx.Tracer):
    """Traces through every module but the known per-frame ones (and any other ``torch.nn`` module, kept whole so
    that it is refused by name); a :func:`_sequential` module as ``nn.Sequential`` runs."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m) in PER_FRAME_MODULES or (super().is_leaf_module(m, qualname) and not _sequential(m))

    def call_module(self, m: nn.Module, forward, args, kwargs):
        if _sequential(m):
            forward = functools.partial(nn.Sequential.forward, m)
        return super().call_module(m, forward, args, kwargs)


def _trace(root: nn.Module) -> fx.Graph:
    if _sequential(root):  # the same children under a plain Sequential: the graph's names are the root's own
        root = nn.Sequential(OrderedDict(root.named_children()))
    return _Tracer().trace(root)


def analyse(module: nn.Module) -> Facts | None:
    """The facts of ``module`` (see the module's docstring), or None where nothing is proved: the module cannot be
    traced, or its graph holds an operation that is not known per frame and blind to memory format."""
    try:
        copied = copy.deepcopy(module)
        graph = _trace(copied)
    except Exception:  # untraceable (data-dependent control flow, unsupported Python): run as written
        return None
    mods = dict(copied.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        if node.op == "call_module":
            if not _per_frame_module(mods[node.target]):
                return None
            calls[node.target] = calls.get(node.target, 0) + 1
        elif not _per_frame_call(node):
            return None
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        return None
    return Facts(graph, _chain(graph), _folds(graph, mods, calls), _strided_1x1(mods, calls))


def _chain(graph: fx.Graph) -> list[str] | None:
    """The called submodules in order, when the graph is input -> module -> module ... -> output, each taking the
    previous node alone."""
    out, prev = [], None
    for node in graph.nodes:
        if node.op == "placeholder":
            prev = node
        elif node.op == "call_module" and node.args == (prev,) and not node.kwargs and len(prev.users) == 1:
            out.append(node.target)
            prev = node
        elif node.op == "output":
            return out if node.args == (prev,) and out else None
        else:
            return None
    return None


def _folds(graph: fx.Graph, mods: dict[str, nn.Module], calls: dict[str, int]) -> list[tuple[str, str]]:
    """(conv, bn) names where the data flow proves ``bn(conv(x))`` alone: the conv's output has one user, the
    BatchNorm2d (with running statistics), which takes it alone, and each is called once in the graph."""
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or type(mods[node.target]) is not nn.BatchNorm2d:
            continue
        bn, src = mods[node.target], node.args[0] if node.args else None
        if not (isinstance(src, fx.Node) and src.op == "call_module" and type(mods[src.target]) is nn.Conv2d):
            continue
        if node.args != (src,) or node.kwargs or len(src.users) != 1 or not bn.track_running_stats:
            continue
        if calls[node.target] == 1 and calls[src.target] == 1 and bn.running_mean is not None:
            pairs.append((src.target, node.target))
    return pairs


def _strided_1x1(mods: dict[str, nn.Module], calls: dict[str, int]) -> bool:
    """True when a called Conv2d is 1x1 with a stride above 1 and fewer than 32 input channels per group: oneDNN's
    channels-last weight gradient of such a convolution writes past its buffer (a crash, or a wrong gradient;
    oneDNN issue 6035: ``IC < ic_block``), seen in PyTorch 2.13 at 4-15 input channels. Training leaves such a
    module in its own memory format."""
    for name in calls:
        m = mods[name]
        strided = isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1) and tuple(m.stride) != (1, 1)
        if strided and m.in_channels // m.groups < 32:
            return True
    return False


def folded_graph(module: nn.Module, facts: Facts) -> fx.GraphModule:
    """An eval-mode inference copy of ``module``: its traced graph with each of ``facts.folds`` folded into one
    convolution (``torch.nn.utils.fusion.fuse_conv_bn_eval``), no parameter asking for gradients."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    root = copy.deepcopy(module).eval()
    graph = copy.deepcopy(facts.graph)
    for conv_name, bn_name in facts.folds:
        fused = fuse_conv_bn_eval(root.get_submodule(conv_name), root.get_submodule(bn_name))
        parent, _, leaf = conv_name.rpartition(".")
        setattr(root.get_submodule(parent) if parent else root, leaf, fused)
        for node in list(graph.nodes):
            if node.op == "call_module" and node.target == bn_name:
                node.replace_all_uses_with(node.args[0])
                graph.erase_node(node)
    out = fx.GraphModule(root, graph)
    out.requires_grad_(False)
    return out.eval()


_PLAIN = (int, float, bool, str, type(None), torch.dtype, torch.device)


def _value(v):
    if isinstance(v, _PLAIN):
        return v
    if isinstance(v, tuple | list):
        return tuple(_value(e) for e in v)
    return ("id", id(v))  # any other object: its identity (a new one is a change)


def fingerprint(module: nn.Module) -> tuple[tuple, tuple]:
    """Everything of ``module`` that can change what it computes, short of its tensors' values, in two parts:

    * its structure: each submodule's name, type, mode and public attributes (plain values, or the identity of
      other objects, bound methods put on the instance included), its hooks, and each parameter's and buffer's
      name, dtype, shape and ``requires_grad``;
    * its tensors: each parameter's and buffer's identity, data pointer and version (a change in place, or new
      data put in).

    A plan that reads only the structure (the graph, a chain of the module's own modules) is kept under the first;
    an inference copy of the weights under both."""
    structure: list = []
    tensors: list = []
    for name, m in module.named_modules():
        attrs = tuple(sorted((k, _value(v)) for k, v in vars(m).items() if not k.startswith("_")))
        hooks = tuple(
            len(getattr(m, h))
            for h in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
        )
        structure.append((name, type(m), attrs, hooks))
        for k, t in (*m._parameters.items(), *m._buffers.items()):
            if t is None:
                structure.append((k, None))
                continue
            structure.append((k, t.dtype, tuple(t.shape), t.requires_grad))
            # an inference tensor keeps no version (the plan refuses those modules before this)
            tensors.append((id(t), t.data_ptr(), -1 if t.is_inference() else t._version))
    return tuple(structure), tuple(tensors)
