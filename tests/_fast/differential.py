"""The fast path against the plain module, over random per-frame modules: the grammar, the checks and a runner.

Each seed gives one per-frame module from a grammar of what users write (conv and BatchNorm in both orders, a conv
output with two users, residual blocks with a strided downsample, pre-activation blocks, Inception branches, SE
blocks, depthwise / grouped / dilated / strided convs, reflect padding, pools with ``ceil_mode``, GroupNorm,
InstanceNorm, activations, dropout, upsampling; 32-channel 3x3 conv - BN - ReLU - max-pool chains, where the Winograd
and pooling kernels run) and one input ``(N, T, C, H, W)`` (N and T from 1, odd frame sizes, non-contiguous and
channels-last tensors). :func:`check` compares ``TimeDistributed(module)`` with the plain module on the folded frames,
``module(x.flatten(0, 1)).unflatten(0, (N, T))``: in eval and train mode, outputs, input and parameter gradients,
BatchNorm buffers, under ``no_grad`` and ``inference_mode``, after the module is changed between calls, under a
bfloat16 autocast (within bfloat16's tolerance), and double backward (equal, or refused with a line naming the
switch).

Run as a script (``python tests/_fast/differential.py --seeds 0:200``), it prints one JSON line per module, a
``start`` line before each, so that a crash names its module (tests/_fast/test_differential.py runs it in a child
process under glibc's heap checks and numba's bounds checks). ``--count`` goes on after a mismatch and prints the
tally.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import traceback

import torch
from torch import nn
from torch.nn import functional as F

TOL = 1e-4  # float32: |fast - plain| <= TOL x the plain result's largest magnitude
# or within this many times the plain float32 module's own distance from float64: the fast path sums in other
# orders (channels-last kernels, chunks of frames); a BatchNorm's bias gradient over 12,288 values per channel was
# 19x the plain module's distance (1.3e-4 of its scale), within float32's bound for such a sum (n·eps = 7e-4)
PLAIN_ERRORS = 30
TOL_BF16 = 6e-2  # bfloat16 autocast: 8 bits of mantissa, rounding in another order through a few layers


# ---------------------------------------------------------------------------------------------------------- grammar


class Draw:
    """Random choices for the grammar, from a seed."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def int(self, lo: int, hi: int) -> int:
        return self.r.randint(lo, hi)

    def choice(self, seq):
        return seq[self.r.randrange(len(seq))]

    def bool(self, p: float = 0.5) -> bool:
        return self.r.random() < p


class ConvThenBNRegistered(nn.Module):
    """Registers ``conv`` then ``bn`` but runs ``conv(relu(bn(x)))``: a BatchNorm before the conv (pre-activation)."""

    def __init__(self, c: int, co: int):
        super().__init__()
        self.conv = nn.Conv2d(c, co, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return self.conv(torch.relu(self.bn(x)))


class TwoUsers(nn.Module):
    """``y = conv(x); bn(y) + y``: the conv's output feeds a BatchNorm and a skip."""

    def __init__(self, c: int, co: int):
        super().__init__()
        self.conv = nn.Conv2d(c, co, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(co)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class Basic(nn.Module):
    """ResNet's basic block, with a strided 1x1 conv - BN downsample where the shape changes."""

    def __init__(self, c: int, co: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, co, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(co)
        self.conv2 = nn.Conv2d(co, co, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(co)
        self.down = None
        if stride != 1 or c != co:
            self.down = nn.Sequential(nn.Conv2d(c, co, 1, stride=stride, bias=False), nn.BatchNorm2d(co))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class PreAct(nn.Module):
    """A pre-activation block: BN - ReLU - conv twice, plus the input."""

    def __init__(self, c: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c), nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(c), nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.conv1(F.relu(self.bn1(x)))
        return x + self.conv2(F.relu(self.bn2(y)))


class Inception(nn.Module):
    """Concatenated branches: 1x1, 3x3, 5x5 (dilated 3x3) and pool - 1x1."""

    def __init__(self, c: int, co: int):
        super().__init__()
        k = max(1, co // 4)
        self.b1 = nn.Sequential(nn.Conv2d(c, k, 1), nn.BatchNorm2d(k), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(c, k, 1), nn.ReLU(), nn.Conv2d(k, k, 3, padding=1), nn.BatchNorm2d(k))
        self.b3 = nn.Sequential(nn.Conv2d(c, k, 3, padding=2, dilation=2), nn.BatchNorm2d(k))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(c, co - 3 * k, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class SE(nn.Module):
    """Squeeze-and-excitation: channels rescaled by a gate from their global average."""

    def __init__(self, c: int):
        super().__init__()
        r = max(1, c // 4)
        self.fc1, self.fc2 = nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class Chain(nn.Module):
    """The same modules as an ``nn.Sequential``, run by a forward of its own (a ModuleList)."""

    def __init__(self, mods: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(mods)

    def forward(self, x):
        for m in self.layers:
            x = m(x)
        return x


ACTS = [
    lambda: nn.ReLU(),
    lambda: nn.ReLU(inplace=True),
    lambda: nn.ReLU6(),
    lambda: nn.LeakyReLU(0.1),
    lambda: nn.SiLU(),
    lambda: nn.GELU(),
    lambda: nn.Sigmoid(),
    lambda: nn.Tanh(),
    lambda: nn.Hardswish(),
    lambda: nn.ELU(),
]


def _conv(d: Draw, c: int, co: int) -> nn.Conv2d:
    k = d.choice([1, 3, 3, 3, 5])
    stride = d.choice([1, 1, 1, 2])
    dilation = d.choice([1, 1, 1, 2]) if k > 1 else 1
    groups = 1
    if d.bool(0.25):
        groups = c if co % c == 0 else 1  # depthwise
    elif d.bool(0.15) and c % 2 == 0 and co % 2 == 0:
        groups = 2
    pad = d.choice([0, k // 2 * dilation, k // 2 * dilation])
    mode = d.choice(["zeros", "zeros", "zeros", "reflect"]) if pad else "zeros"
    return nn.Conv2d(
        c, co, k, stride=stride, padding=pad, dilation=dilation, groups=groups, bias=d.bool(), padding_mode=mode
    )


def _norm(d: Draw, c: int) -> nn.Module:
    kind = d.choice(["bn", "bn", "bn", "bn-noaffine", "bn-nostats", "gn", "in"])
    if kind == "bn":
        return nn.BatchNorm2d(c, momentum=d.choice([0.1, 0.3, None]))
    if kind == "bn-noaffine":
        return nn.BatchNorm2d(c, affine=False)
    if kind == "bn-nostats":
        return nn.BatchNorm2d(c, track_running_stats=False)
    if kind == "gn":
        return nn.GroupNorm(next(g for g in (4, 2, 1) if c % g == 0), c)
    return nn.InstanceNorm2d(c, affine=d.bool())


def _pool(d: Draw) -> nn.Module:
    kind = d.choice(["max2", "max2", "max3", "avg2", "avg3", "maxceil"])
    if kind == "max2":
        return nn.MaxPool2d(2)
    if kind == "max3":
        return nn.MaxPool2d(3, stride=2, padding=1)
    if kind == "avg2":
        return nn.AvgPool2d(2, ceil_mode=d.bool())
    if kind == "avg3":
        return nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=d.bool())
    return nn.MaxPool2d(2, ceil_mode=True)


def _block(d: Draw, c: int) -> tuple[list[nn.Module], int]:
    """One block of the grammar on ``c`` channels: its modules and the channels after it."""
    co = d.choice([2, 4, 6, 8, 12, 16])
    kind = d.choice(
        [
            "cbr",
            "cbr",
            "cbrp",
            "cbrp",
            "conv",
            "act",
            "norm",
            "pool",
            "drop",
            "up",
            "basic",
            "preact",
            "order",
            "twousers",
            "inception",
            "se",
            "winograd",
        ]
    )
    if kind == "cbr":  # conv - BN - activation
        return [_conv(d, c, co), _norm(d, co), d.choice(ACTS)()], co
    if kind == "cbrp":  # conv - BN - ReLU - pool
        return [_conv(d, c, co), _norm(d, co), nn.ReLU(inplace=d.bool()), _pool(d)], co
    if kind == "conv":
        return [_conv(d, c, co)], co
    if kind == "act":
        return [d.choice(ACTS)()], c
    if kind == "norm":
        return [_norm(d, c)], c
    if kind == "pool":
        return [_pool(d)], c
    if kind == "drop":
        return [nn.Dropout(d.choice([0.2, 0.5])) if d.bool() else nn.Dropout2d(0.3)], c
    if kind == "up":
        return [nn.Upsample(scale_factor=2, mode=d.choice(["nearest", "bilinear"]))], c
    if kind == "basic":
        return [Basic(c, co, d.choice([1, 2]))], co
    if kind == "preact":
        return [PreAct(c)], c
    if kind == "order":
        return [ConvThenBNRegistered(c, co)], co
    if kind == "twousers":
        return [TwoUsers(c, co)], co
    if kind == "inception":
        co = max(co, 4)
        return [Inception(c, co)], co
    if kind == "se":
        return [SE(c)], c
    # the reference model's block at 32 channels: the kernels' path (Winograd, BN - max-pool - ReLU)
    mods = [
        nn.Conv2d(c, 32, 3, padding=1, bias=d.bool()),
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=d.bool()),
        nn.MaxPool2d(2),
    ]
    mods += [nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2)]
    return mods, 32


def _strided_1x1(module: nn.Module) -> bool:
    return any(
        isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1) and m.in_channels // m.groups < 32
        for m in module.modules()
    )


def make_case(seed: int) -> tuple[nn.Module, torch.Tensor, str]:
    """Seed ``seed``'s per-frame module (float32, train mode), an input ``(N, T, C, H, W)`` it takes, and a one-line
    description of the input."""
    d = Draw(seed)
    torch.manual_seed(seed)
    c_in = d.choice([1, 3, 4])
    mods, c = [], c_in
    for _ in range(d.int(1, 4)):
        more, c = _block(d, c)
        mods += more
    if d.bool(0.3):
        mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    shape = d.choice(["seq", "seq", "nested", "custom"])
    if shape == "seq":
        module = nn.Sequential(*mods)
    elif shape == "nested":
        k = d.int(0, len(mods))
        module = nn.Sequential(nn.Sequential(*mods[:k]), *mods[k:])
    else:
        module = Chain(mods)
    for m in module.modules():  # running statistics that are not the identity, so folding them shows
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
        if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.GroupNorm) and m.weight is not None:
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    n, t = d.int(1, 3), d.int(1, 3)
    h = w = 0
    for _ in range(12):  # a frame size the module takes (odd sizes often)
        h, w = d.int(9, 40), d.int(9, 40)
        try:
            with torch.no_grad():
                module.eval()(torch.zeros(2, c_in, h, w, device="meta"))
            break
        except Exception:
            h = w = 0
    if not h:
        h, w = 64, 64
    layout = d.choice(["contiguous", "contiguous", "channels_last", "strided"])
    if layout == "channels_last" and _strided_1x1(module):
        layout = "contiguous"  # the plain module itself crashes there (oneDNN issue 6035; cnnlstm._fast.graph)
    if layout == "channels_last":
        x = torch.randn(n, t, h, w, c_in).permute(0, 1, 4, 2, 3)
    elif layout == "strided":
        x = torch.randn(n, t, c_in, h, 2 * w)[..., ::2]
    else:
        x = torch.randn(n, t, c_in, h, w)
    return module.train(), x, f"x {tuple(x.shape)} {layout}"


# ----------------------------------------------------------------------------------------------------------- checks


class Mismatch(AssertionError):
    pass


def _td():
    from cnnlstm import TimeDistributed

    return TimeDistributed


def _scale(t: torch.Tensor) -> float:
    return float(t.detach().double().abs().max()) if t.numel() else 0.0


# the plain module's own error that the fast path may avoid: an in-place op on a view of the input, which the fast
# path hands the module as a copy (channels-last, or chunks)
PLAIN_ONLY = "a view of a leaf Variable that requires grad is being used in an in-place operation"


def _close(what: str, got, want, tol: float = TOL, exact=None, floor: float = 1e-2) -> None:
    """``got`` (the fast path's) against ``want`` (the plain module's): equal exceptions, or tensors of one shape and
    dtype within ``tol`` x ``want``'s largest magnitude (at least ``floor``). With ``exact`` (the plain module's
    result in float64), the
    fast path may also be as far from it as :data:`PLAIN_ERRORS` times the plain float32 module is (a bias before a
    BatchNorm, whose gradient is rounding alone; a max-pool whose window has two near-equal values)."""
    if isinstance(want, BaseException) or isinstance(got, BaseException):
        if isinstance(want, RuntimeError) and PLAIN_ONLY in str(want) and not isinstance(got, BaseException):
            return
        if type(got) is not type(want):
            raise Mismatch(f"{what}: fast path {_name(got)}, plain module {_name(want)}")
        return
    if got is None or want is None:
        if (got is None) != (want is None):
            raise Mismatch(f"{what}: fast path {(got is None and 'no gradient') or 'a gradient'}, plain the other")
        return
    if got.shape != want.shape:
        raise Mismatch(f"{what}: shape {tuple(got.shape)} against the plain module's {tuple(want.shape)}")
    if got.dtype != want.dtype:
        raise Mismatch(f"{what}: dtype {got.dtype} against the plain module's {want.dtype}")
    g, w = got.detach().double(), want.detach().double()
    if not torch.equal(g.isnan(), w.isnan()):
        raise Mismatch(f"{what}: NaNs in other places")
    g, w = g.nan_to_num(), w.nan_to_num()
    err = float((g - w).abs().max()) if g.numel() else 0.0
    allowed = tol * max(_scale(w), floor)
    if exact is not None and err > allowed and g.numel():
        e = exact.detach().double().nan_to_num()
        err = float((g - e).abs().max())
        allowed = max(allowed, PLAIN_ERRORS * float((w - e).abs().max()))
    if err > allowed:
        raise Mismatch(f"{what}: max difference {err:.3g} on a scale of {_scale(w):.3g}")


def _name(x) -> str:
    return f"raised {type(x).__name__}: {str(x).splitlines()[0][:200]}" if isinstance(x, BaseException) else "ran"


def _call(f):
    try:
        return f()
    except Exception as e:
        return e


def _plain(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    n, t = x.shape[:2]
    return module(x.flatten(0, 1)).unflatten(0, (n, t))


def _grads(module: nn.Module, x: torch.Tensor, run, seed: int):
    """Output, input gradient and parameter gradients of ``run(module, x)`` (a fresh leaf copy of x), or the
    exception it raised."""
    xx = x.detach().clone().requires_grad_()
    module.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    try:
        y = run(module, xx)
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
        (y * g).sum().backward()
    except Exception as e:
        return e
    return y.detach(), xx.grad, {k: p.grad for k, p in module.named_parameters()}


def _compare_grads(what: str, got, want, exact=None) -> None:
    """Output, input and parameter gradients (:func:`_grads`) of the fast path against the plain module's, and
    the plain module's in float64 (``exact``; None where dropout draws other masks in float64)."""
    if isinstance(got, BaseException) or isinstance(want, BaseException):
        _close(what, got, want)
        return
    ex = exact if isinstance(exact, tuple) else (None, None, {})
    _close(f"{what} output", got[0], want[0], exact=ex[0])
    _close(f"{what} input gradient", got[1], want[1], exact=ex[1])
    # a parameter whose gradient is rounding alone (a bias before a BatchNorm, zero in exact arithmetic) is judged on
    # the scale of the module's gradients: its sums run over values of that size
    floor = max([1e-2] + [_scale(g) for g in want[2].values() if g is not None])
    for k in want[2]:
        _close(f"{what} gradient of {k}", got[2][k], want[2][k], exact=ex[2].get(k), floor=floor)


def _buffers(what: str, got: nn.Module, want: nn.Module) -> None:
    for (k, b), (_, b2) in zip(got.named_buffers(), want.named_buffers(), strict=True):
        _close(f"{what} buffer {k}", b.float(), b2.float())


def _fast(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _td()(module)(x)


def _change(module: nn.Module, d: Draw) -> str:
    """Change ``module`` between calls the way users do; returns what was changed."""
    mods = [(k, m) for k, m in module.named_modules() if k]
    bns = [m for _, m in mods if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    pools = [m for _, m in mods if isinstance(m, nn.MaxPool2d | nn.AvgPool2d)]
    acts = [(k, m) for k, m in mods if isinstance(m, nn.ReLU | nn.SiLU | nn.GELU | nn.Tanh | nn.ELU | nn.ReLU6)]
    convs = [m for _, m in mods if isinstance(m, nn.Conv2d)]
    options = ["weights"]
    options += ["eps"] * bool(bns) + ["pool"] * bool(pools) + ["act"] * bool(acts) + ["data"] * bool(convs)
    kind = d.choice(options)
    if kind == "eps":
        d.choice(bns).eps = 0.5
    elif kind == "pool":
        p = d.choice(pools)
        p.kernel_size, p.stride = 3, 1
        p.padding = 1
    elif kind == "act":
        name, _ = d.choice(acts)
        parent, _, leaf = name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, leaf, nn.Hardswish())
    elif kind == "data":  # a new tensor put in place of the weight
        c = d.choice(convs)
        c.weight.data = c.weight.data * 0.5 + 0.1
    else:
        with torch.no_grad():
            for p in module.parameters():
                p.mul_(0.7).add_(0.05)
    return kind


def _exact(ref: nn.Module, x: torch.Tensor, seed: int):
    """The plain module's outputs and gradients in float64 (a copy of it), or None where it draws dropout masks."""
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0 for m in ref.modules()):
        return None
    r64 = copy.deepcopy(ref).double()
    return _grads(r64, x.double(), _plain, seed)


def check(seed: int) -> dict:
    """Every comparison for seed ``seed``; raises :class:`Mismatch` at the first difference."""
    module, x, desc = make_case(seed)
    info = {"seed": seed, "input": desc}
    ref = copy.deepcopy(module)
    # train mode: outputs, gradients, then the buffers (BatchNorm's statistics moved by the step)
    exact = _exact(ref, x, seed)
    _compare_grads("train", _grads(module, x, _fast, seed), _grads(ref, x, _plain, seed), exact)
    _buffers("train", module, ref)
    # eval mode, with and without gradients
    module.eval()
    ref.eval()
    exact = _exact(ref, x, seed)
    _compare_grads("eval", _grads(module, x, _fast, seed), _grads(ref, x, _plain, seed), exact)
    with torch.no_grad():
        _close("eval no_grad", _call(lambda: _fast(module, x)), _call(lambda: _plain(ref, x)))
    with torch.inference_mode():
        _close("eval inference_mode", _call(lambda: _fast(module, x)), _call(lambda: _plain(ref, x)))
    # changed between calls: the same change to both
    state = random.getstate()
    kind = _change(module, Draw(seed + 20_000_000))
    _change(ref, Draw(seed + 20_000_000))
    random.setstate(state)
    info["change"] = kind
    with torch.no_grad():
        _close(f"eval after a change ({kind})", _call(lambda: _fast(module, x)), _call(lambda: _plain(ref, x)))
    exact = _exact(ref, x, seed)
    _compare_grads(f"eval after a change ({kind})", _grads(module, x, _fast, seed), _grads(ref, x, _plain, seed), exact)
    module.train()
    ref.train()
    exact = _exact(ref, x, seed)
    _compare_grads(
        f"train after a change ({kind})", _grads(module, x, _fast, seed), _grads(ref, x, _plain, seed), exact
    )
    # bfloat16 autocast at inference
    module.eval()
    ref.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = _call(lambda: _fast(module, x)), _call(lambda: _plain(ref, x))
        _close("eval bf16 autocast", got if isinstance(got, BaseException) else got.float(),
               want if isinstance(want, BaseException) else want.float(), TOL_BF16)  # fmt: skip
    # double backward (a gradient penalty), in train mode
    module.train()
    ref.train()
    got, want = _double(module, x, _fast, seed), _double(ref, x, _plain, seed)
    exact = None if _exact(ref, x, seed) is None else _double(copy.deepcopy(ref).double(), x.double(), _plain, seed)
    if isinstance(got, BaseException) and not isinstance(want, BaseException):
        if "fast_path" not in str(got) or "CNNLSTM_FAST" not in str(got):
            raise Mismatch(f"double backward: {_name(got)}, not a refusal naming the switch")
        info["double"] = "refused"
    else:
        _compare_grads("double backward", got, want, exact)
        info["double"] = "equal"
    return info


def _double(module: nn.Module, x: torch.Tensor, run, seed: int):
    xx = x.detach().clone().requires_grad_()
    module.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    try:
        y = run(module, xx)
        (gx,) = torch.autograd.grad(y.square().sum(), xx, create_graph=True)
        gx.square().sum().backward()
    except Exception as e:
        return e
    return gx.detach(), xx.grad, {k: p.grad for k, p in module.named_parameters()}


def describe(seed: int) -> str:
    module, _, desc = make_case(seed)
    return f"seed {seed}: {desc}\n{module}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0:200", help="A:B, the seeds A to B-1")
    ap.add_argument("--count", action="store_true", help="go on after a mismatch; print the tally")
    ap.add_argument("--no-numba", action="store_true", help="as where numba is not installed (no kernels)")
    args = ap.parse_args(argv)
    if args.no_numba:
        sys.modules["numba"] = None  # `import numba` raises ImportError, as without the fast extra
    a, b = map(int, args.seeds.split(":"))
    torch.set_num_threads(max(1, torch.get_num_threads()))
    bad = 0
    for seed in range(a, b):
        print(json.dumps({"start": seed}), flush=True)
        try:
            info = check(seed)
        except Mismatch as e:
            bad += 1
            print(json.dumps({"seed": seed, "mismatch": str(e), "module": describe(seed)}), flush=True)
            if not args.count:
                return 1
            continue
        except Exception as e:
            bad += 1
            tb = traceback.format_exc(limit=6)
            print(json.dumps({"seed": seed, "error": f"{type(e).__name__}: {e}", "tb": tb, "module": describe(seed)}),
                  flush=True)  # fmt: skip
            if not args.count:
                return 1
            continue
        print(json.dumps({"ok": seed, **info}), flush=True)
    print(json.dumps({"done": b - a, "bad": bad}), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
