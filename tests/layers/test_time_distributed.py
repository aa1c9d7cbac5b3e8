"""TimeDistributed: parity with a frame loop, BatchNorm policies, chunking, lengths, errors, gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import cnnlstm
from cnnlstm import TimeDistributed


def _conv_bn() -> nn.Sequential:
    """A per-frame CNN (N, 3, H, W) -> (N, 4, H, W) whose BatchNorm has non-trivial running statistics."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    bn = net[1]
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return net


def _frame_loop(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference: ``module`` on each frame ``x[:, t]`` in turn, stacked on the time axis."""
    return torch.stack([module(x[:, t]) for t in range(x.shape[1])], dim=1)


def _count_calls(module: nn.Module) -> list[int]:
    """Record the batch size of every call of ``module``."""
    sizes: list[int] = []
    module.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    return sizes


# ----------------------------------------------------------------------------- parity with a frame loop


def test_matches_frame_loop_conv_bn_eval():
    torch.manual_seed(0)
    net = _conv_bn().eval()
    td = TimeDistributed(net).eval()
    x = torch.randn(2, 5, 3, 8, 8)  # (N, T, C, H, W)
    y = td(x)
    assert y.shape == (2, 5, 4, 8, 8)
    torch.testing.assert_close(y, _frame_loop(net, x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(3, 4, 6), (2, 3, 5, 6)], ids=["NTF", "NTSF"])
def test_matches_frame_loop_linear(shape):
    torch.manual_seed(1)
    lin = nn.Linear(6, 4)
    x = torch.randn(*shape)
    y = TimeDistributed(lin)(x)
    assert y.shape == (*shape[:-1], 4)
    torch.testing.assert_close(y, _frame_loop(lin, x), atol=1e-6, rtol=0)


def test_non_contiguous_input_matches_frame_loop():
    torch.manual_seed(2)
    lin = nn.Linear(6, 4)
    x = torch.randn(5, 3, 6).transpose(0, 1)  # (N=3, T=5, F) as a non-contiguous view
    assert not x.is_contiguous()
    torch.testing.assert_close(TimeDistributed(lin)(x), _frame_loop(lin, x), atol=1e-6, rtol=0)


def test_step_runs_the_module_on_one_frame_and_carries_nothing():
    td = TimeDistributed(nn.Conv2d(3, 4, 3, padding=1)).eval()
    frame = torch.randn(2, 3, 8, 8)
    y, caches = td.step(frame)
    assert caches is None
    torch.testing.assert_close(y, td(frame.unsqueeze(1))[:, 0], rtol=0, atol=1e-6)


def test_module_runs_once_on_all_frames():
    lin = nn.Linear(6, 4)
    sizes = _count_calls(lin)
    TimeDistributed(lin)(torch.zeros(3, 5, 6))
    assert sizes == [15]


# ----------------------------------------------------------------------------- BatchNorm policies


def test_train_mode_batchnorm_statistics_over_all_frames():
    torch.manual_seed(3)
    bn = nn.BatchNorm2d(3)
    reference = copy.deepcopy(bn)
    x = torch.randn(2, 4, 3, 5, 5) * 2 + 1  # (N, T, C, H, W)
    y = TimeDistributed(bn).train()(x)
    y_ref = reference.train()(x.flatten(0, 1))  # BatchNorm on the folded (N*T, C, H, W) batch
    torch.testing.assert_close(bn.running_mean, reference.running_mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(bn.running_var, reference.running_var, atol=1e-6, rtol=0)
    torch.testing.assert_close(y, y_ref.unflatten(0, (2, 4)), atol=1e-6, rtol=0)
    assert int(bn.num_batches_tracked) == 1  # one statistics update for the whole clip batch


def test_frozen_bn_stays_in_eval_mode_after_train():
    torch.manual_seed(4)
    net = _conv_bn()
    conv, bn = net[0], net[1]
    reference = copy.deepcopy(net).eval()
    td = TimeDistributed(net, bn="frozen")
    td.train()
    assert td.training and conv.training
    assert not bn.training
    assert all(not p.requires_grad for p in bn.parameters())
    assert all(p.requires_grad for p in conv.parameters())

    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    x = torch.randn(2, 3, 3, 6, 6)
    y = td(x)
    torch.testing.assert_close(bn.running_mean, mean, atol=0, rtol=0)
    torch.testing.assert_close(bn.running_var, var, atol=0, rtol=0)
    torch.testing.assert_close(y, _frame_loop(reference, x), atol=1e-6, rtol=0)  # eval-mode output


def test_frozen_bn_survives_parent_train_call():
    net = _conv_bn()
    model = nn.Sequential(TimeDistributed(net, bn="frozen"), nn.Identity())
    model.eval()
    model.train()
    assert net[0].training
    assert not net[1].training


def test_train_bn_updates_statistics():
    torch.manual_seed(5)
    net = _conv_bn()
    bn = net[1]
    td = TimeDistributed(net, bn="train").train()
    assert bn.training
    assert all(p.requires_grad for p in bn.parameters())
    mean = bn.running_mean.clone()
    td(torch.randn(2, 3, 3, 6, 6))
    assert not torch.allclose(bn.running_mean, mean)
    assert int(bn.num_batches_tracked) == 1


def test_bad_options_are_config_errors():
    with pytest.raises(cnnlstm.ConfigError, match=r"bn='off'.*train, frozen"):
        TimeDistributed(nn.Identity(), bn="off")
    with pytest.raises(cnnlstm.ConfigError, match="chunk_size"):
        TimeDistributed(nn.Identity(), chunk_size=0)


# ----------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("chunk_size", [1, 2, 4, 6, 7, 100])
def test_chunk_size_at_inference_matches_no_chunking(chunk_size):
    torch.manual_seed(6)
    net = _conv_bn()
    x = torch.randn(2, 3, 3, 6, 6)  # N*T = 6 frames
    whole = TimeDistributed(net).eval()(x)
    chunked_td = TimeDistributed(net, chunk_size=chunk_size).eval()
    sizes = _count_calls(net)
    chunked = chunked_td(x)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)
    expected_calls = -(-6 // chunk_size)
    assert len(sizes) == expected_calls
    assert sum(sizes) == 6
    with torch.no_grad():
        torch.testing.assert_close(chunked_td(x), whole, atol=1e-6, rtol=0)


def test_chunk_size_with_lengths_matches_no_chunking():
    torch.manual_seed(7)
    lin = nn.Linear(6, 4)
    x = torch.randn(3, 5, 6)
    lengths = torch.tensor([5, 2, 4])
    whole = TimeDistributed(lin).eval()(x, lengths)
    chunked = TimeDistributed(lin, chunk_size=3).eval()(x, lengths)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)


def test_training_folds_all_frames_despite_chunk_size():
    bn = nn.BatchNorm1d(4)
    sizes = _count_calls(bn)
    TimeDistributed(bn, chunk_size=2).train()(torch.randn(2, 3, 4))
    assert sizes == [6]


def test_train_mode_under_no_grad_still_folds_all_frames():
    torch.manual_seed(8)
    bn_chunked, bn_whole = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    x = torch.randn(2, 3, 3, 4, 4)
    with torch.no_grad():
        y_chunked = TimeDistributed(bn_chunked, chunk_size=2).train()(x)
        y_whole = TimeDistributed(bn_whole).train()(x)
    torch.testing.assert_close(bn_chunked.running_mean, bn_whole.running_mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(y_chunked, y_whole, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- lengths


def test_lengths_padded_frames_are_zeros_and_never_run():
    torch.manual_seed(9)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    with torch.no_grad():
        conv.bias.fill_(1.0)  # a padded frame run through the conv would not be zero
    sizes = _count_calls(conv)
    x = torch.randn(3, 4, 3, 5, 5)
    lengths = torch.tensor([4, 1, 2])
    y = TimeDistributed(conv)(x, lengths)
    assert y.shape == (3, 4, 4, 5, 5)
    assert sizes == [7]  # only the lengths.sum() valid frames
    reference = _frame_loop(conv, x)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(y[i, :n], reference[i, :n], atol=1e-6, rtol=0)
        assert torch.count_nonzero(y[i, n:]) == 0


def test_full_lengths_equal_no_lengths():
    torch.manual_seed(10)
    lin = nn.Linear(6, 4)
    x = torch.randn(2, 3, 6)
    torch.testing.assert_close(TimeDistributed(lin)(x, torch.tensor([3, 3])), TimeDistributed(lin)(x))


def test_lengths_batchnorm_sees_only_valid_frames():
    torch.manual_seed(11)
    bn = nn.BatchNorm2d(3)
    reference = copy.deepcopy(bn)
    x = torch.randn(2, 4, 3, 5, 5)
    x[0, 2:] = 100.0  # padding garbage that would wreck the statistics if it were seen
    x[1, 1:] = -100.0
    lengths = torch.tensor([2, 1])
    TimeDistributed(bn).train()(x, lengths)
    valid = torch.cat([x[0, :2], x[1, :1]])  # (3, C, H, W): the valid frames only
    reference.train()(valid)
    torch.testing.assert_close(bn.running_mean, reference.running_mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(bn.running_var, reference.running_var, atol=1e-5, rtol=0)


def test_lengths_do_not_mutate_inputs():
    x = torch.randn(2, 3, 6)
    lengths = torch.tensor([3, 1])
    x0, l0 = x.clone(), lengths.clone()
    TimeDistributed(nn.Linear(6, 4))(x, lengths)
    assert torch.equal(x, x0) and torch.equal(lengths, l0)


@pytest.mark.parametrize(
    ("lengths", "match"),
    [
        (torch.tensor([0, 2]), r"every length must be in 1\.\.T=3"),
        (torch.tensor([4, 2]), r"every length must be in 1\.\.T=3.*max 4"),
        (torch.tensor([3, 2, 1]), r"lengths must be \(N,\) = \(2,\)"),
        (torch.tensor([[3, 2]]), r"lengths must be \(N,\) = \(2,\)"),
        (torch.tensor([3.0, 2.0]), "lengths must be integers"),
    ],
    ids=["zero", "too-long", "wrong-n", "2-D", "float"],
)
def test_bad_lengths_are_shape_errors(lengths, match):
    with pytest.raises(cnnlstm.ShapeError, match=r"TimeDistributed\(Linear\).*" + match):
        TimeDistributed(nn.Linear(6, 4))(torch.zeros(2, 3, 6), lengths)


# ----------------------------------------------------------------------------- wrong shapes


@pytest.mark.parametrize("shape", [(6,), (2, 6)])
def test_rank_below_three_is_a_shape_error(shape):
    with pytest.raises(cnnlstm.ShapeError, match=r"TimeDistributed\(Linear\) wants \(N, T, \.\.\.\) with at least 3"):
        TimeDistributed(nn.Linear(6, 4))(torch.zeros(shape))


def test_wrong_channels_is_a_shape_error_with_numbers():
    td = TimeDistributed(nn.Conv2d(3, 8, 3))
    with pytest.raises(cnnlstm.ShapeError, match=r"TimeDistributed\(Conv2d\)") as info:
        td(torch.zeros(2, 3, 4, 10, 10))
    assert not isinstance(info.value, RuntimeError)
    message = str(info.value)
    assert "in_channels=3" in message
    assert "in_channels=4" in message  # the fix
    assert "(6, 4, 10, 10)" in message  # the folded shape it got


def test_wrong_features_is_a_shape_error_with_numbers():
    with pytest.raises(cnnlstm.ShapeError, match=r"TimeDistributed\(Linear\).*in_features=6"):
        TimeDistributed(nn.Linear(5, 4))(torch.zeros(2, 3, 6))


def test_unrelated_runtime_errors_pass_through():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("out of coffee")

    with pytest.raises(RuntimeError, match="out of coffee"):
        TimeDistributed(Boom())(torch.zeros(2, 3, 4))


# ----------------------------------------------------------------------------- gradients


def test_gradients_reach_the_wrapped_module():
    torch.manual_seed(12)
    net = _conv_bn()
    td = TimeDistributed(net).train()
    x = torch.randn(2, 3, 3, 6, 6, requires_grad=True)
    (td(x) * torch.randn(2, 3, 4, 6, 6)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.count_nonzero(p.grad) > 0, name
    assert x.grad is not None and torch.count_nonzero(x.grad) > 0


def test_gradients_with_lengths_skip_padded_frames():
    torch.manual_seed(13)
    lin = nn.Linear(6, 4)
    x = torch.randn(2, 3, 6, requires_grad=True)
    TimeDistributed(lin)(x, torch.tensor([3, 1])).pow(2).sum().backward()
    assert torch.count_nonzero(lin.weight.grad) > 0
    assert torch.count_nonzero(x.grad[1, 1:]) == 0
    assert torch.count_nonzero(x.grad[1, :1]) > 0
