"""Every plan of ``cnnlstm._fast`` gives the plain module's outputs (float32, 1e-4): chunks, channels_last, folded
BatchNorm, oneDNN, train and eval; and the caller's module is left as it was."""

import copy
import sys

import pytest
import torch

import cnnlstm as cl
import cnnlstm._fast.alloc as alloc
import cnnlstm._fast.plan as plan
from cnnlstm._fast.plan import auto_chunk, plan_for


def _chain(cnn: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``cnn``'s modules one after the other, as plain ``nn.Sequential`` runs them."""
    for m in cnn:
        x = _chain(m, x) if isinstance(m, torch.nn.Sequential) else m(x)
    return x


def _plain(model: cl.CNNLSTM, x: torch.Tensor) -> torch.Tensor:
    """The reference computation: all frames folded at once, NCHW, straight through each module."""
    cnn = model.backbone.module  # never through TimeDistributed
    n, t = x.shape[:2]
    maps = _chain(cnn, x.flatten(0, 1).contiguous()).unflatten(0, (n, t))  # (N, T, C, H, W)
    return model.head(model.rnn(model.bridge(maps))[0])


def _model(t: int = 3, size: int = 32, channels=(8,), **kw) -> cl.CNNLSTM:
    torch.manual_seed(0)
    return cl.CNNLSTM(
        input_shape=(t, 3, size, size), num_classes=3, hidden_size=8, backbone_options={"channels": channels}, **kw
    )


@pytest.mark.parametrize("chunk", [None, 1, 3, 1000])
@pytest.mark.parametrize("size", [32, 112])
def test_fast_inference_equals_the_plain_path(chunk, size):
    model = _model(t=5, size=size, channels=(8, 16), chunk_size=chunk).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 5, 3, size, size)
    with torch.no_grad():
        ref = _plain(copy.deepcopy(model), x)
        got = model(x)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-4)


def test_the_callers_module_is_left_as_it_was():
    model = _model()
    before = {k: (v.clone(), v.stride()) for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 3, 32, 32)
    model.eval()(x)
    with torch.no_grad():
        model(x)
    model.train()(x).sum().backward()
    for k, v in model.state_dict().items():
        assert v.stride() == before[k][1], k  # no channels_last conversion of the caller's weights
        if "running" not in k and "num_batches" not in k:
            torch.testing.assert_close(v, before[k][0], rtol=0, atol=0, msg=k)
    assert all(not k.startswith("_") for k in vars(model.backbone) if k not in vars(torch.nn.Module()))


def test_fast_training_step_equals_the_plain_path():
    model = _model(t=4)
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
    assert auto_chunk(torch.empty(100, 3, 112, 112)) == 4
    assert auto_chunk(torch.empty(100, 3, 56, 56)) == 16
    assert auto_chunk(torch.empty(100, 3, 1024, 1024)) == 1
    assert auto_chunk(torch.empty(100, 7)) == 100


def test_inference_follows_the_weights_after_an_optimizer_step():
    model = _model()
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.inference_mode():
        before = model.eval()(x)
    assert "_fast" not in " ".join(model.state_dict())
    model.train()(x).sum().backward()  # trainable after an inference-mode forward; BN statistics move
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    with torch.inference_mode():
        after = model.eval()(x)
        plain = _plain(copy.deepcopy(model), x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, plain, rtol=0, atol=1e-4)  # the inference copy was rebuilt


def test_inference_follows_a_loaded_state_dict():
    model, other = _model().eval(), _model(channels=(8,)).eval()
    torch.nn.init.normal_(other.backbone.module[0].conv.weight)
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        model(x)
        model.load_state_dict(other.state_dict())
        torch.testing.assert_close(model(x), _plain(other, x), rtol=0, atol=1e-4)


def test_a_model_made_under_inference_mode_runs_and_follows_a_state_dict_loaded_there():
    """Its tensors keep no version counter (reading one raised), so no inference copy is kept for it: a state
    dict loaded in place under inference mode reaches the next call."""
    other = _model(channels=(8,)).eval()
    torch.nn.init.normal_(other.backbone.module[0].conv.weight)
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.inference_mode():
        model = _model().eval()
        first = model(x)
        torch.testing.assert_close(first, _plain(model, x), rtol=0, atol=1e-4)
        model.load_state_dict(other.state_dict())
        torch.testing.assert_close(model(x), _plain(other, x), rtol=0, atol=1e-4)
        assert not torch.allclose(first, model(x))


def test_hooks_on_the_backbone_fire_in_every_mode():
    model = _model()
    seen = []
    model.backbone.module[0].bn.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.inference_mode():
        model.eval()(torch.randn(2, 3, 3, 32, 32))
    assert seen, "a user's hook must fire at inference"
    seen.clear()
    model.train()(torch.randn(2, 3, 3, 32, 32)).sum().backward()
    assert seen, "a user's hook must fire in training"


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
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


def test_a_sequential_with_its_own_forward_is_not_taken_apart():
    class Doubled(torch.nn.Sequential):
        def forward(self, x):
            return 2 * super().forward(x)

    torch.manual_seed(0)
    cnn = Doubled(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    x = torch.randn(1, 2, 3, 8, 8)
    ref = 2 * torch.relu(torch.nn.functional.conv2d(x[0], cnn[0].weight, cnn[0].bias))[None]
    for mode in (False, True):
        td = cl.TimeDistributed(cnn).train(mode)
        with torch.no_grad():
            torch.testing.assert_close(td(x), ref, rtol=0, atol=1e-5)


def test_eval_mode_with_gradients_reaches_the_input_and_the_weights():
    model = _model()
    x = torch.randn(2, 3, 3, 32, 32, requires_grad=True)  # e.g. a saliency map: d output / d pixels
    plain = copy.deepcopy(model).eval()
    out = model.eval()(x)
    out[:, 0].sum().backward()
    ref = _plain(plain, x.detach().requires_grad_())
    ref[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    w, w_ref = model.backbone.module[0].conv.weight.grad, plain.backbone.module[0].conv.weight.grad
    torch.testing.assert_close(w, w_ref, rtol=1e-4, atol=1e-5)  # fine-tuning in eval mode trains the weights


@pytest.mark.parametrize("mode", [False, True])
def test_wrong_channels_still_raise_the_backbones_own_error(mode):
    cnn = cl.SmallCNN(channels=(8,)).train(mode)
    x = torch.randn(2, 4, 32, 32)
    with pytest.raises(cl.ShapeError, match="SmallCNN wants images"):
        plan_for(cnn, x)(x)
    with pytest.raises(cl.ShapeError, match="C=3"):
        cl.TimeDistributed(cnn).train(mode)(x[None])


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("mode", [False, True])
def test_a_traced_model_records_the_plain_module(mode):
    model = _model(channels=(8, 16), chunk_size=1).train(mode)
    with torch.no_grad():
        traced = torch.jit.trace(model.backbone, torch.randn(1, 3, 3, 32, 32))
        x = torch.randn(3, 3, 3, 32, 32)
        torch.testing.assert_close(traced(x), model.backbone(x), rtol=0, atol=1e-4)
    ops = str(traced.inlined_graph)
    assert "aten::_convolution" in ops and "mkldnn" not in ops and "split" not in ops  # portable, no chunk loop


def test_meta_tensors_run_the_plain_module():
    plan = plan_for(torch.nn.Conv2d(3, 4, 3).eval(), torch.empty(5, 3, 8, 8, device="meta"))
    assert plan(torch.empty(5, 3, 8, 8, device="meta")).shape == (5, 4, 6, 6)


@pytest.mark.skipif(not __import__("cnnlstm._fast.onednn", fromlist=["x"]).bf16_native(), reason="no native bf16")
def test_bf16_inference_runs_the_blocked_prefix_in_bfloat16_close_to_the_dense_path(monkeypatch):
    from cnnlstm._fast.onednn import OneDNNPrefix

    model = _model(t=4, size=48, channels=(8, 16)).eval()
    x = torch.randn(2, 4, 3, 48, 48)
    seen = []
    call = OneDNNPrefix.__call__
    monkeypatch.setattr(
        OneDNNPrefix, "__call__", lambda self, f, dtype=torch.float32: seen.append(dtype) or call(self, f, dtype)
    )
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(x)
        ref = _plain(copy.deepcopy(model), x)  # the dense modules under the same autocast
    assert seen and set(seen) == {torch.bfloat16}
    torch.testing.assert_close(got.float(), ref.float(), rtol=0, atol=0.05)  # bfloat16 rounding, not another model
    with torch.inference_mode():
        model(x)  # float32 again outside autocast
    assert seen[-1] == torch.float32


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap")
@pytest.mark.parametrize("glibc_untuned", [True, False])
def test_inference_holds_a_block_at_the_heap_top_in_an_untuned_process(glibc_untuned, monkeypatch):
    monkeypatch.setattr(alloc, "untuned", lambda: glibc_untuned)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2)).eval()
    x = torch.randn(8, 3, 32, 32)
    with torch.inference_mode():
        plan_for(cnn, x)(x)
        pin = plan._INFERENCE[cnn][1].pin
        if not glibc_untuned:  # a tuned allocator keeps freed memory itself
            assert pin is None
            return
        # above the call's buffers, so freeing them leaves no free top for glibc to trim (and fault in again)
        assert pin is not None and 0 <= alloc._sbrk()(0) - (pin.data_ptr() + pin.nbytes) < alloc.TOP_SLACK
        plan_for(cnn, x)(x)
        assert plan._INFERENCE[cnn][1].pin is pin  # still at the top: kept from call to call
