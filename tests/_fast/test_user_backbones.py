"""A user's own backbone through the fast path: chains of standard modules (fused training blocks, folded inference
copy) and modules it cannot take apart (run as they are) give the plain module's outputs and gradients to 1e-4."""

import copy

import pytest
import torch
from torch import nn

import cnnlstm as cl


class Residual(nn.Module):
    """x + conv-BN-ReLU-conv-BN(x), then ReLU: a forward of its own, which the plan runs as it is."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1),
            nn.BatchNorm2d(c),
        )  # fmt: skip

    def forward(self, x):
        return torch.relu(x + self.body(x))


def _block(c_in: int, c: int, pool: nn.Module) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True), pool]


BACKBONES = {
    "conv-bn-relu-maxpool": lambda: nn.Sequential(*_block(3, 8, nn.MaxPool2d(2)), *_block(8, 16, nn.MaxPool2d(2))),
    "avgpool-dropout": lambda: nn.Sequential(
        *_block(3, 8, nn.AvgPool2d(2)), nn.Dropout(0.3), *_block(8, 16, nn.MaxPool2d(2)), nn.Dropout2d(0.2)
    ),
    "nested-and-residual": lambda: nn.Sequential(
        nn.Sequential(*_block(3, 8, nn.MaxPool2d(2))), Residual(8), nn.Sequential(*_block(8, 16, nn.MaxPool2d(2)))
    ),
    "winograd-3x3": lambda: nn.Sequential(  # 32 input channels: Winograd's training convolutions (and inference)
        *_block(3, 32, nn.MaxPool2d(2)), nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2)
    ),
    "bias-conv-affine-free-bn": lambda: nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8, affine=False),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(8, 16, 3, stride=2),
        nn.BatchNorm2d(16),
        nn.ReLU(),
    ),
}


def _pair(name: str) -> tuple[cl.CNNLSTM, nn.Module]:
    torch.manual_seed(0)
    cnn = BACKBONES[name]()
    for m in cnn.modules():  # statistics that are not the identity, so folding them shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model = cl.CNNLSTM(input_shape=(None, 3, 32, 32), num_classes=3, hidden_size=8, backbone=cnn)
    return model, copy.deepcopy(model)


def _plain(model: cl.CNNLSTM, x: torch.Tensor, memory_format=torch.contiguous_format) -> torch.Tensor:
    """The reference: all frames folded through the user's module's own forward (NCHW unless told)."""
    n, t = x.shape[:2]
    maps = model.backbone.module(x.flatten(0, 1).contiguous(memory_format=memory_format)).unflatten(0, (n, t))
    return model.head(model.rnn(model.bridge(maps))[0])


@pytest.fixture(params=["chunks", "whole"])
def training_path(request, monkeypatch):
    """Both training paths: chunk by chunk (a plain glibc process; chunks of 4 frames here, so the 6 frames of
    a batch make a chunk of 4 and one of 2) and the whole batch in one call (a process with a tuned allocator)."""
    chunks = request.param == "chunks"
    monkeypatch.setattr("cnnlstm._fast.plan.untuned", lambda: chunks)  # float32 outside autocast
    monkeypatch.setattr("cnnlstm._fast.chunked_train.CHUNK_TRAIN_BYTES", 4 * 8 * 32 * 32 * 4)  # 4 frames of 8x32x32
    return request.param


@pytest.mark.parametrize("name", list(BACKBONES))
def test_a_users_backbone_trains_as_its_plain_module(name, training_path):
    model, plain = _pair(name)
    x = torch.randn(2, 3, 3, 32, 32)
    torch.manual_seed(1)  # dropout draws the same masks in both: the modules run in the same order, and
    out = model.train()(x)
    torch.manual_seed(1)  # on frames in the same memory order (dropout fills its mask in memory order)
    ref = _plain(plain.train(), x, torch.contiguous_format)  # dropout: run as written, in its own format
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)
    (out * torch.arange(out.numel()).view_as(out)).sum().backward()
    (ref * torch.arange(ref.numel()).view_as(ref)).sum().backward()
    for (k, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4, msg=k)
    for (k, b), c in zip(model.named_buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(b, c, rtol=0, atol=1e-5, msg=k)  # BatchNorm's running statistics


@pytest.mark.parametrize("name", list(BACKBONES))
def test_a_users_backbone_infers_as_its_plain_module(name):
    model, plain = _pair(name)
    x = torch.randn(3, 5, 3, 32, 32)
    with torch.inference_mode():
        got = model.eval()(x)
        ref = _plain(plain.eval(), x)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-4)
