"""Every speed path gives the plain path's outputs (float32, 1e-4): chunks, channels_last, train and eval."""

import contextlib
import copy
from collections import OrderedDict

import pytest
import torch

import cnnlstm as cl


def _chain(cnn: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``cnn``'s modules one after the other, as plain ``nn.Sequential`` runs them (no fused blocks)."""
    for m in cnn:
        x = _chain(m, x) if isinstance(m, torch.nn.Sequential) else m(x)
    return x


def _plain(model: cl.CNNLSTM, x: torch.Tensor) -> torch.Tensor:
    """The reference computation: all frames folded at once, NCHW, straight through each module."""
    cnn = model.backbone.module  # never run through TimeDistributed: its weights keep their NCHW format
    n, t = x.shape[:2]
    maps = _chain(cnn, x.flatten(0, 1).contiguous()).unflatten(0, (n, t))  # (N, T, C, H, W)
    return model.head(model.rnn(model.bridge(maps))[0])


@pytest.mark.parametrize("chunk", [None, 1, 3, 1000])
@pytest.mark.parametrize("size", [32, 112])
def test_fast_inference_equals_the_plain_path(chunk, size):
    torch.manual_seed(0)
    model = cl.CNNLSTM(
        input_shape=(5, 3, size, size),
        num_classes=4,
        hidden_size=16,
        chunk_size=chunk,
        backbone_options={"channels": (8, 16)},
    ).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 5, 3, size, size)
    with torch.no_grad():
        ref = _plain(copy.deepcopy(model), x)
        got = model(x)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-4)
    assert model.backbone.module[0].conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_fast_training_step_equals_the_plain_path():
    torch.manual_seed(0)
    model = cl.CNNLSTM(input_shape=(4, 3, 32, 32), num_classes=3, hidden_size=8, backbone_options={"channels": (8,)})
    x = torch.randn(2, 4, 3, 32, 32)
    plain = copy.deepcopy(model)
    out = model.train()(x)
    ref = _plain(plain.train(), x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)
    out.sum().backward()
    ref.sum().backward()
    g, r = model.backbone.module[0].conv.weight.grad, plain.backbone.module[0].conv.weight.grad
    torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)
    bn, bn_ref = model.backbone.module[0].bn, plain.backbone.module[0].bn
    torch.testing.assert_close(bn.running_mean, bn_ref.running_mean, rtol=0, atol=1e-6)  # stats over all N*T frames


def test_chunk_is_picked_from_the_frame_size():
    from cnnlstm.layers.time_distributed import _auto_chunk

    assert _auto_chunk(torch.empty(100, 3, 112, 112)) == 4
    assert _auto_chunk(torch.empty(100, 3, 56, 56)) == 16
    assert _auto_chunk(torch.empty(100, 3, 1024, 1024)) == 1


def test_folded_batchnorm_copy_follows_the_weights():
    torch.manual_seed(0)
    model = cl.CNNLSTM(input_shape=(3, 3, 32, 32), num_classes=3, hidden_size=8, backbone_options={"channels": (8,)})
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.inference_mode():
        before = model.eval()(x)
    fused = model.backbone._fused[1]
    assert isinstance(fused[0].bn, torch.nn.Identity) and fused is not model.backbone.module
    assert "_fused" not in " ".join(model.state_dict())
    model.train()(x).sum().backward()  # trainable after an inference-mode forward; BN statistics move
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    with torch.inference_mode():
        after = model.eval()(x)
        plain = _plain(copy.deepcopy(model), x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, plain, rtol=0, atol=1e-4)  # the copy was rebuilt from the new weights


def test_hooks_on_the_backbone_keep_it_unfused():
    model = cl.CNNLSTM(input_shape=(3, 3, 32, 32), num_classes=3, hidden_size=8, backbone_options={"channels": (8,)})
    seen = []
    model.backbone.module[0].conv.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.inference_mode():
        model.eval()(torch.randn(2, 3, 3, 32, 32))
    assert seen, "a user's hook must fire"


def test_onednn_plan_runs_the_small_backbone_and_swaps_relu_after_pool():
    from cnnlstm.layers.time_distributed import _OneDNNPrefix

    model = cl.CNNLSTM(input_shape=(3, 3, 32, 32), num_classes=3, hidden_size=8, backbone_options={"channels": (8, 16)})
    with torch.inference_mode():
        model.eval()(torch.randn(2, 3, 3, 32, 32))
    plan = model.backbone._fused[2]
    assert isinstance(plan, _OneDNNPrefix) and plan.rest == []
    assert [k for k, _ in plan.steps] == ["conv", "maxpool", "relu"] * 2


def test_onednn_prefix_hands_the_rest_of_the_chain_to_dense_modules():
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Sequential(torch.nn.MaxPool2d(2, ceil_mode=True), torch.nn.Conv2d(8, 4, 3, stride=2)),
        torch.nn.Tanh(),  # not run on oneDNN tensors: from here on the dense modules
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    td = cl.TimeDistributed(cnn).eval()
    x = torch.randn(2, 3, 3, 15, 15)
    with torch.no_grad():
        got = td(x)
        ref = torch.stack([copy.deepcopy(cnn)(x[:, i].contiguous()) for i in range(3)], dim=1)
    assert [k for k, _ in td._fused[2].steps] == ["conv", "maxpool", "relu", "conv"]
    assert len(td._fused[2].rest) == 3
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


def test_a_sequential_with_its_own_forward_is_not_taken_apart():
    class Doubled(torch.nn.Sequential):
        def forward(self, x):
            return 2 * super().forward(x)

    torch.manual_seed(0)
    cnn = Doubled(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    td = cl.TimeDistributed(cnn).eval()
    x = torch.randn(1, 2, 3, 8, 8)
    with torch.no_grad():
        got = td(x)
    assert td._fused[2] is None
    torch.testing.assert_close(got, 2 * torch.relu(torch.nn.functional.conv2d(x[0], cnn[0].weight, cnn[0].bias))[None])


def test_eval_mode_with_gradients_takes_the_dense_path():
    torch.manual_seed(0)
    model = cl.CNNLSTM(input_shape=(3, 3, 32, 32), num_classes=3, hidden_size=8, backbone_options={"channels": (8,)})
    x = torch.randn(2, 3, 3, 32, 32, requires_grad=True)  # e.g. a saliency map: d output / d pixels
    model.eval()(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_wrong_channels_still_raise_the_backbone_shape_error_at_inference():
    model = cl.CNNLSTM(input_shape=(3, 3, 32, 32), num_classes=3, hidden_size=8, backbone_options={"channels": (8,)})
    with torch.inference_mode(), pytest.raises(cl.ShapeError, match="C=3"):
        model.eval().backbone(torch.randn(2, 3, 4, 32, 32))


def _bn_cases():
    return {
        "momentum": dict(),
        "cumulative": dict(momentum=None),
        "no-affine": dict(affine=False),
        "no-stats": dict(track_running_stats=False),
    }


@pytest.mark.parametrize(
    ("case", "frozen"),
    [(c, False) for c in _bn_cases()] + [(c, True) for c in _bn_cases() if c != "no-stats"],  # eval BN needs stats
)
def test_fused_training_block_equals_the_plain_chain(case, frozen, monkeypatch):
    from cnnlstm import backbones
    from cnnlstm.backbones import ConvBlock
    from cnnlstm.layers.time_distributed import freeze_batchnorm

    monkeypatch.setattr(backbones, "CHUNK_BYTES", 3 * 6 * 9 * 10 * 4)  # chunks of 3 frames of 4: one ragged

    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(6, **_bn_cases()[case])
    block = ConvBlock(
        OrderedDict(conv=torch.nn.Conv2d(3, 6, 3, padding=1), bn=bn, relu=torch.nn.ReLU(), pool=torch.nn.MaxPool2d(2))
    )
    if bn.affine:
        torch.nn.init.uniform_(bn.weight, -1.0, 1.0)  # negative scales too: pooling must still come after BatchNorm
        torch.nn.init.uniform_(bn.bias, -0.5, 0.5)
    if frozen:
        freeze_batchnorm(block)
    plain = copy.deepcopy(block)
    x = torch.randn(4, 3, 9, 10)
    assert block._fusable(x)
    for _ in range(2):  # twice: the running statistics and the step count move as BatchNorm moves them
        out, ref = block(x), _chain(plain, x)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
        (out * torch.arange(out.numel()).view_as(out)).sum().backward()
        (ref * torch.arange(ref.numel()).view_as(ref)).sum().backward()
    # float32 BatchNorm backward in closed form sums in another order: equal to 1e-5 of the largest gradient
    # (the conv bias's is 0 up to rounding under batch statistics, so its own scale is no yardstick)
    scale = max(b.grad.abs().max().item() for b in plain.parameters() if b.grad is not None)
    for (name, a), b in zip(block.named_parameters(), plain.parameters()):
        if b.grad is None:
            assert a.grad is None, name
        else:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5 * scale, msg=name)
    for (name, a), b in zip(block.named_buffers(), plain.buffers()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def test_fused_training_block_keeps_less_for_backward():
    from cnnlstm.backbones import SmallCNN

    torch.manual_seed(0)
    cnn = SmallCNN(channels=(8, 16)).train()
    x = torch.randn(4, 3, 32, 32)

    def saved_bytes(run) -> int:
        seen: dict[int, int] = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            dtypes.add(t.dtype)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run(x)
        return sum(seen.values())

    dtypes: set = set()
    fused = saved_bytes(cnn)
    assert torch.int64 not in dtypes  # no max-pool indices kept: backward recomputes them
    plain = saved_bytes(lambda x: _chain(cnn, x))
    # per block the plain chain also keeps BatchNorm's full-size output (ReLU and max-pool save it) and the
    # int64 indices (half the bytes of the block's input)
    assert fused < 0.6 * plain, (fused, plain)


def test_blocks_off_the_fast_path_run_the_plain_chain():
    from cnnlstm.backbones import ConvBlock

    block = ConvBlock(
        OrderedDict(
            conv=torch.nn.Conv2d(3, 4, 3), bn=torch.nn.BatchNorm2d(4), relu=torch.nn.ReLU(), pool=torch.nn.MaxPool2d(2)
        )
    )
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert not block._fusable(x)
    assert block._fusable(x)
    with pytest.MonkeyPatch.context() as mp:  # export and torch.compile record the plain chain
        mp.setattr(torch.compiler, "is_exporting", lambda: True)
        assert not block._fusable(x)
    block.relu.register_forward_hook(lambda *a: None)
    assert not block._fusable(x)


def _block_and_copy(c_out: int, pool: int = 2):
    """A seeded ``conv 3x3 - BatchNorm - ReLU - maxpool`` ConvBlock on 3 channels, and an identical copy."""
    from cnnlstm.backbones import ConvBlock

    torch.manual_seed(0)
    parts = dict(conv=torch.nn.Conv2d(3, c_out, 3, padding=1), bn=torch.nn.BatchNorm2d(c_out))
    block = ConvBlock(OrderedDict(**parts, relu=torch.nn.ReLU(), pool=torch.nn.MaxPool2d(pool)))
    return block, copy.deepcopy(block)


def test_fused_training_block_under_bf16_autocast_equals_the_plain_chain():
    block, plain = _block_and_copy(8)
    x = torch.randn(4, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = block(x), _chain(plain, x)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    out.float().sum().backward()
    ref.float().sum().backward()
    torch.testing.assert_close(block.conv.weight.grad, plain.conv.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(block.bn.running_var, plain.bn.running_var, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bf16", [False, True])
def test_fused_training_block_trains_a_bias_beside_a_frozen_weight(bf16):
    block, plain = _block_and_copy(4)
    for b in (block, plain):
        b.bn.weight.requires_grad_(False)
    x = torch.randn(3, 3, 8, 8)
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with cast:
        out, ref = block(x), _chain(plain, x)
    (out.float() * torch.arange(out.numel()).view_as(out)).sum().backward()
    (ref.float() * torch.arange(ref.numel()).view_as(ref)).sum().backward()
    assert block.bn.weight.grad is None and block.bn.bias.grad is not None
    torch.testing.assert_close(block.bn.bias.grad, plain.bn.bias.grad, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("bf16", [False, True])
def test_fused_training_block_output_can_be_changed_in_place(bf16):
    block, plain = _block_and_copy(4)
    x = torch.randn(3, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        out, ref = block(x).mul_(2), _chain(plain, x).mul_(2)  # e.g. Dropout(inplace=True) after the block
    out.float().sum().backward()
    ref.float().sum().backward()
    torch.testing.assert_close(block.conv.weight.grad, plain.conv.weight.grad, rtol=1e-4, atol=1e-5)


def test_fused_training_block_keeps_batchnorms_errors_and_empty_batches():
    block, _ = _block_and_copy(4, pool=1)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        block(torch.randn(1, 3, 1, 1))
    assert block(torch.randn(0, 3, 8, 8)).shape == (0, 4, 8, 8)
