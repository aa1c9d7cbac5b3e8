"""The fast path's one switch (``cnnlstm.fast_path``, ``CNNLSTM_FAST``), deterministic algorithms, double backward,
and the repro of issue 36 (a ResNet basic block with a strided 1x1 downsample crashed its first training step)."""

import subprocess
import sys

import pytest
import torch
from torch import nn

import cnnlstm as cl
from cnnlstm._fast import switch
from cnnlstm._fast.plan import plan_for


def _chain() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))


def test_the_switch_runs_the_module_as_written(monkeypatch):
    cnn, x = _chain().eval(), torch.randn(6, 3, 16, 16)
    assert plan_for(cnn, x) is not cnn  # on by default: the folded inference copy
    with cl.fast_path(False):
        assert plan_for(cnn, x) is cnn
        with cl.fast_path(True):
            assert plan_for(cnn, x) is not cnn
    monkeypatch.setenv("CNNLSTM_FAST", "0")
    assert plan_for(cnn, x) is cnn
    with cl.fast_path(True):
        assert plan_for(cnn, x) is not cnn  # the block's choice wins over the environment's
    monkeypatch.setenv("CNNLSTM_FAST", "off")
    assert not switch.enabled()


def test_switched_off_the_results_are_the_plain_modules_exactly(monkeypatch):
    cnn = _chain()
    x = torch.randn(2, 3, 3, 16, 16)
    td = cl.TimeDistributed(cnn)
    for mode in ("train", "eval"):
        getattr(cnn, mode)()
        torch.manual_seed(1)
        want = cnn(x.flatten(0, 1)).unflatten(0, (2, 3))
        with cl.fast_path(False):
            got = td(x)
        assert torch.equal(got, want)
        monkeypatch.setenv("CNNLSTM_FAST", "0")
        assert torch.equal(td(x), want)
        monkeypatch.delenv("CNNLSTM_FAST")


def test_deterministic_algorithms_run_the_plain_module():
    cnn, x = _chain().eval(), torch.randn(6, 3, 16, 16)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert plan_for(cnn, x) is cnn
    finally:
        torch.use_deterministic_algorithms(before)


def test_double_backward_is_refused_naming_the_switch(monkeypatch):
    monkeypatch.setattr("cnnlstm._fast.plan.untuned", lambda: False)  # the fused chain (one autograd step)
    td = cl.TimeDistributed(_chain().train())
    x = torch.randn(2, 3, 3, 16, 16, requires_grad=True)
    (g,) = torch.autograd.grad(td(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=r"fast_path\(False\).*CNNLSTM_FAST=0"):
        g.square().sum().backward()
    with cl.fast_path(False):  # and the switch makes it work
        (g,) = torch.autograd.grad(td(x).square().sum(), x, create_graph=True)
        g.square().sum().backward()
    assert x.grad is not None


REPRO = """
import torch
from torch import nn
from cnnlstm import TimeDistributed

class Block(nn.Module):
    def __init__(self, c, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.down = nn.Sequential(nn.Conv2d(c, c, 1, stride=stride, bias=False), nn.BatchNorm2d(c))
    def forward(self, x):
        return torch.relu(self.bn1(self.conv1(x)) + self.down(x))

torch.manual_seed(0)
m = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), Block(8, 2)).train()
ref = __import__("copy").deepcopy(m)
x = torch.randn(3, 5, 4, 20, 28, requires_grad=True)
g = torch.randn(3, 5, 8, 10, 14)
(TimeDistributed(m)(x) * g).sum().backward()
x2 = x.detach().clone().requires_grad_()
(ref(x2.flatten(0, 1)).unflatten(0, (3, 5)) * g).sum().backward()
torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)
for (k, p), q in zip(m.named_parameters(), ref.parameters()):
    torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=k)
print("ok")
"""


def test_the_issues_resnet_block_trains_and_equals_the_plain_module():
    out = subprocess.run([sys.executable, "-c", REPRO], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
