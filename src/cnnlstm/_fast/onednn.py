"""The oneDNN prefix: the leading Conv2d / ReLU / MaxPool2d run of an inference chain on oneDNN's blocked tensors.

The activations stay in oneDNN's blocked layout from the first convolution to the end of the run (dense
``channels_last`` tensors pay a reorder around every convolution), max-pooling on blocked tensors skips the
indices that only training uses, and a ReLU before a max-pool runs after it (the two commute), on a quarter of the
values. The weights are handed over once, as oneDNN tensors in plain layout (public ``Tensor.to_mkldnn``). The
outputs are those of the same oneDNN kernels. In float32, runs of conv 3x3 - max-pool - ReLU blocks that
:mod:`.winograd` takes (numba installed) run as its Winograd convolutions instead, on dense channels-last tensors
(1.21-1.29x a whole inference call at batch 8). The rest of the chain runs as usual on the dense result.
``bench/private_apis.py`` measures this against dense ``channels_last``, a private one-off weight reorder,
``optimize_for_inference`` and ``torch.compile``.

Under a CPU bfloat16 autocast, on a CPU that computes bfloat16 natively, the same run takes bfloat16 blocked
tensors and weights (converted once, on first use): dense bfloat16 ``channels_last`` max-pooling alone took 30%
of the reference model's bf16 inference, and the whole backbone ran 1.6x faster on blocked tensors (one thread,
chunks of 4 frames of 112x112: 133 against 218 ms for 128 frames).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from . import winograd

__all__ = ["OneDNNPrefix", "bf16_native"]


CPUINFO = "/proc/cpuinfo"
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # the CPU computes bfloat16 natively (Linux's names for the flags)


@functools.cache
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags as Linux reports them (:data:`CPUINFO`), or None where they cannot be read."""
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


@functools.cache
def bf16_native() -> bool:
    """Whether this CPU computes bfloat16 natively: AVX512-BF16 or AMX in its own flags. oneDNN's
    ``_is_mkldnn_bf16_supported`` also says yes on AVX-512 CPUs that only emulate bfloat16 (an Intel Xeon with
    AVX-512 and VNNI, without AVX512-BF16), where OpenVINO refuses bf16; the flags are the one answer both use.
    Where the flags cannot be read (not Linux), oneDNN's answer."""
    flags = cpu_flags()
    if flags is not None:
        return any(f in flags for f in BF16_FLAGS)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _supported(m: nn.Module) -> bool:
    """True for a leaf that runs on blocked tensors: a zero-padded float32 Conv2d, a MaxPool2d without indices or
    dilation, a ReLU, an Identity or (at inference, a no-op) a Dropout."""
    if isinstance(m, nn.Conv2d):
        return (
            type(m).forward is nn.Conv2d.forward
            and m.padding_mode == "zeros"
            and not isinstance(m.padding, str)
            and m.weight.dtype == torch.float32
        )
    if isinstance(m, nn.MaxPool2d):
        return type(m).forward is nn.MaxPool2d.forward and not m.return_indices and m.dilation in (1, (1, 1))
    return type(m) in (nn.ReLU, nn.Identity) or (isinstance(m, nn.Dropout) and type(m).forward is nn.Dropout.forward)


class OneDNNPrefix:
    """Runs a chain of eval-mode leaves ``(B, C, H, W) -> (B, *out)``: its leading supported run on oneDNN's blocked
    tensors, the rest as the leaves themselves.

    Args:
        leaves: the chain's modules in order (an inference copy: the weights are read once, here).
    """

    def __init__(self, leaves: list[nn.Module]):
        n = 0
        while n < len(leaves) and _supported(leaves[n]):
            n += 1
        self.steps: list[tuple[str, tuple]] = []
        convs: dict[int, nn.Conv2d] = {}  # step index -> its convolution
        for m in leaves[:n]:
            if isinstance(m, nn.Conv2d):
                args = (list(m.padding), list(m.stride), list(m.dilation), m.groups)
                w = m.weight.detach().contiguous().to_mkldnn()
                b = None if m.bias is None else m.bias.detach().contiguous().to_mkldnn()
                convs[len(self.steps)] = m
                self.steps.append(("conv", (w, b, *args)))
            elif isinstance(m, nn.ReLU):
                self.steps.append(("relu", ()))
            elif isinstance(m, nn.MaxPool2d):
                pool = ("maxpool", (m.kernel_size, m.stride, m.padding, 1, m.ceil_mode))
                if self.steps and self.steps[-1][0] == "relu":  # max-pool commutes with ReLU: ReLU on 1/4 the data
                    self.steps.insert(-1, pool)
                else:
                    self.steps.append(pool)
        self.rest = leaves[n:]
        self._bf16: list[tuple[str, tuple]] | None = None  # the steps with bfloat16 weights, made on first use
        self.winograd = self._winograd_runs(convs) if winograd.available() else {}

    def _winograd_runs(self, convs: dict[int, nn.Conv2d]) -> dict[int, tuple[int, list[winograd.WinogradBlock]]]:
        """First step -> (the step after, the blocks) of each run of conv - max-pool - ReLU blocks that Winograd
        convolutions take (:func:`.winograd.eligible`)."""
        runs: dict[int, tuple[int, list]] = {}
        i = 0
        while i < len(self.steps):
            start, blocks = i, []
            while (
                i in convs
                and [k for k, _ in self.steps[i : i + 3]] == ["conv", "maxpool", "relu"]
                and winograd.eligible(convs[i], self.steps[i + 1][1])
            ):
                blocks.append(winograd.WinogradBlock(convs[i].weight, convs[i].bias))
                i += 3
            if blocks:
                runs[start] = (i, blocks)
            else:
                i += 1
        return runs

    def _steps(self, dtype: torch.dtype) -> list[tuple[str, tuple]]:
        if dtype != torch.bfloat16:
            return self.steps
        if self._bf16 is None:
            cast = lambda t: None if t is None else t.to_dense().to(torch.bfloat16).to_mkldnn()  # noqa: E731
            self._bf16 = [(k, (cast(a[0]), cast(a[1]), *a[2:]) if k == "conv" else a) for k, a in self.steps]
        return self._bf16

    @staticmethod
    def applies(leaves: list[nn.Module]) -> bool:
        """True when oneDNN is built in and ``leaves`` start with a supported run holding a convolution."""
        if not torch.backends.mkldnn.is_available():
            return False
        for m in leaves:
            if not _supported(m):
                return False
            if isinstance(m, nn.Conv2d):
                return True
        return False

    def __call__(self, frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Args: frames ``(B, C, H, W)``, without gradients; ``dtype`` the prefix computes in (float32, or
        bfloat16 under a bf16 autocast, its output then bfloat16 too). Returns ``(B, *out)``."""
        x = frames.to(dtype).contiguous().to_mkldnn()
        steps, i = self._steps(dtype), 0
        while i < len(steps):
            run = self.winograd.get(i) if dtype == torch.float32 else None
            # a map too small for a block's pool gets PyTorch's own error from the direct ops
            if run is not None and min(x.shape[-2:]) >= 2 ** len(run[1]) and winograd.available():
                try:
                    y = winograd.run(run[1], x.to_dense() if x.is_mkldnn else x)
                except Exception as err:  # a kernel that fails to compile: the direct convolutions from here on
                    winograd.failed(err)
                    continue
                i = run[0]
                x = y.contiguous().to_mkldnn() if i < len(steps) else y
                continue
            kind, a = steps[i]
            if kind == "conv":
                x = torch.mkldnn_convolution(x, *a)
            elif kind == "relu":
                x = torch.relu_(x)
            else:
                x = torch.max_pool2d(x, *a)
            i += 1
        x = x.to_dense() if x.is_mkldnn else x
        for m in self.rest:
            x = m(x)
        return x
