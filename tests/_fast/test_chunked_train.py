"""Training in chunks (a plain glibc process's training path): no tensor of a step larger than a chunk's, chunks
sized by the chain's largest activation."""

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import cnnlstm._fast.alloc as alloc
import cnnlstm._fast.chunked_train as ct
from cnnlstm._fast.plan import leaves, plan_for


class _Largest(TorchDispatchMode):
    """Records the bytes of the largest tensor any aten op returns."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                self.bytes = max(self.bytes, t.untyped_storage().nbytes())
        return out


def _backbone() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Dropout(0.1),
        nn.Conv2d(32, 8, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # fmt: skip


@pytest.mark.parametrize("chunks", [True, False])
def test_a_training_step_in_chunks_makes_no_tensor_larger_than_a_chunk(chunks, monkeypatch):
    monkeypatch.setattr("cnnlstm._fast.plan.untuned", lambda: chunks)
    cnn = _backbone().train()
    x = torch.randn(24, 3, 32, 32)
    frame = 16 * 32 * 32 * 4  # the largest activation of one frame: the first convolution's output
    monkeypatch.setattr(ct, "CHUNK_TRAIN_BYTES", 4 * frame)  # 4 frames a chunk, 6 chunks
    monkeypatch.setitem(alloc._STATE, "raised", True)  # glibc's threshold is raised with one block, once a process
    monkeypatch.setattr(alloc, "top_pin", lambda pin: None)  # the block kept above the step's activations
    cnn[7] = nn.Identity()  # dropout drawing masks runs the module as written (masks in the frames' own order)
    largest = _Largest()
    with largest:
        out = plan_for(cnn, x)(x)
        (out * torch.arange(out.numel()).view_as(out)).sum().backward()
    if chunks:
        assert largest.bytes <= max(4 * frame, x.nbytes)  # the frames themselves are the caller's
    else:
        assert largest.bytes >= 24 * frame  # the whole batch's activations: what the chunks avoid


def test_chunks_convert_a_convolutions_weight_once_a_step(monkeypatch):
    monkeypatch.setattr("cnnlstm._fast.plan.untuned", lambda: True)
    monkeypatch.setattr(ct, "CHUNK_TRAIN_BYTES", 4 * 16 * 32 * 32 * 4)  # 4 frames a chunk: 6 chunks
    monkeypatch.setattr(alloc, "top_pin", lambda pin: None)
    cnn = _backbone().train()
    cnn[7] = nn.Identity()  # no dropout: the gradients are compared below
    exact = copy.deepcopy(cnn).double()  # the reference: float64 (float32's own rounding here is ~5e-4)
    x = torch.randn(24, 3, 32, 32)
    weights = torch.randn(24, 8)  # a loss whose gradient BatchNorm does not cancel (a plain sum's it does)
    with torch.profiler.profile(record_shapes=True) as prof:  # sees the copies made inside convolution's kernels
        out = plan_for(cnn, x)(x)
        (out * weights).sum().backward()
    shape = list(cnn[4].weight.shape)
    copies = [e for e in prof.events() if e.name == "aten::copy_" and e.input_shapes and e.input_shapes[0] == shape]
    # 6 chunks: the weight to channels-last once in forward (converted once a chunk, in forward and in backward,
    # this was 20 copies), one copy of each chunk's weight gradient inside convolution's backward, a few more
    # (one more: the copy of the module that the plan traces, once per structure, cnnlstm._fast.graph.analyse)
    assert 1 <= len(copies) <= 6 + 4, len(copies)
    (exact(x.double()) * weights.double()).sum().backward()
    torch.testing.assert_close(cnn[4].weight.grad, exact[4].weight.grad.float(), rtol=0, atol=5e-5)


def test_chunks_are_sized_by_the_largest_activation_of_a_frame(monkeypatch):
    monkeypatch.setattr(ct, "CHUNK_TRAIN_BYTES", 1 << 20)
    chain = ct.ChunkedChain(leaves(_backbone()))
    x = torch.randn(5, 3, 64, 48)
    assert ct.peak_frame_bytes(chain.steps, x[:1]) == 16 * 64 * 48 * 4  # the first convolution's output
    assert chain.frames_per_chunk(x) == (1 << 20) // (16 * 64 * 48 * 4) == 5
    assert chain.frames_per_chunk(torch.randn(2, 3, 640, 480)) == 1  # never fewer than one frame


class _NoMeta(nn.Module):
    """A module of a user's that runs on real tensors only."""

    def forward(self, x):
        return x * float(x.sum() > 0)  # reads a value: fails on meta


def test_a_module_that_cannot_run_on_meta_gets_a_generous_guess():
    chain = ct.ChunkedChain([nn.Conv2d(3, 4, 3), _NoMeta()])
    frame = torch.randn(1, 3, 10, 10)
    assert ct.peak_frame_bytes(chain.steps, frame) == 16 * frame.nbytes


_MAPPED = """
import ctypes, json, torch, cnnlstm
FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in FIELDS.split()]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Info
cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
model = cnnlstm.CNNLSTM(input_shape=(None, 3, 32, 32), num_classes=2, hidden_size=4, backbone=cnn)
model(torch.zeros(1, 4, 3, 32, 32)).sum().backward()  # one training step in chunks
before = mallinfo2().hblkhd
big = torch.empty(24 << 20, dtype=torch.uint8)  # 24 MiB: above glibc's first threshold (128 KiB)
print(json.dumps({"mapped": mallinfo2().hblkhd - before}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_training_in_chunks_lets_glibc_keep_chunk_sized_blocks_in_its_heap():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "CNNLSTM_", "LD_PRELOAD"))}
    out = subprocess.run([sys.executable, "-c", _MAPPED], capture_output=True, text=True, env=env, check=True)
    # glibc's adaptive threshold rose with the block the chain mapped and freed once: 24 MiB comes from the heap
    assert json.loads(out.stdout.strip().splitlines()[-1])["mapped"] == 0


_FAULTS = """
import json, resource, sys, torch
import cnnlstm._fast.plan as plan
plan.untuned = lambda: sys.argv[1] == "chunks"  # the whole batch in one call, as a tuned process runs it
torch.manual_seed(0)
cnn = torch.nn.Sequential(
    torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
    torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
).train()
x = torch.randn(128, 3, 64, 64)  # the first convolution's output: 32 MiB, above glibc's mmap ceiling
def step():
    plan.plan_for(cnn, x)(x).sum().backward()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(json.dumps({"faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_training_in_chunks_reuses_its_memory_from_step_to_step():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "CNNLSTM_", "LD_PRELOAD"))}

    def faults(path: str) -> float:
        out = subprocess.run([sys.executable, "-c", _FAULTS, path], capture_output=True, text=True, env=env, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])["faults"]

    whole, chunks = faults("whole"), faults("chunks")
    # the whole batch faults its big activations in again each step (35-125 MB of 4 KiB pages); in chunks, the
    # step's memory stays in glibc's heap. Seen: 8,900 a step with numba's pooling kernels (fewer big buffers),
    # 15,000-31,800 with PyTorch's, against 0-2,900 in chunks
    assert whole > 4_000 and chunks < whole / 4, (whole, chunks)


_PIN = """
import json, torch
import cnnlstm._fast.alloc as alloc
alloc.untuned = lambda: True
pin = alloc.top_pin(None)
got = {"pin": None if pin is None else pin.nbytes}
if pin is not None:
    got["gap"] = alloc._sbrk()(0) - (pin.data_ptr() + pin.nbytes)  # what lies above the pin
    got["kept"] = alloc.top_pin(pin) is pin
    room = torch.empty(alloc.PIN_BYTES, dtype=torch.uint8)
    got["room_below"] = room.data_ptr() < pin.data_ptr()
    del room
alloc.untuned = lambda: False
got["tuned"] = alloc.top_pin(None)
print(json.dumps(got))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap")
def test_the_pin_sits_at_the_top_of_the_heap_and_is_kept_there():
    # in a fresh process: where the heap's top lies depends on everything the process allocated before, and in
    # the test run's own process that is whatever the tests before this one left (it failed there once)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "CNNLSTM_", "LD_PRELOAD"))}
    out = subprocess.run([sys.executable, "-c", _PIN], capture_output=True, text=True, env=env, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["pin"] == alloc.PIN_BYTES
    assert 0 <= got["gap"] < alloc.TOP_SLACK  # nothing above it but slack
    assert got["kept"]  # still at the top: kept
    assert got["room_below"]  # free room under the pin, not the heap grown past it
    assert got["tuned"] is None  # a tuned process keeps its memory without one
