"""Your own CNN in your own training loop: cnnlstm infers every size and runs the backbone fast. In a plain
python a chain of standard modules trains chunk by chunk, so glibc keeps each step's activations for the next;
``cnnlstm.tune_malloc()`` (opt-in) lets the whole batch run in one call, a little faster still.

Run: python examples/06_own_backbone_training.py   (or: cnnlstm run examples/06_own_backbone_training.py)
"""

import time

import torch
from torch import nn

import cnnlstm
from cnnlstm.precision import resolve_precision

tuned = cnnlstm.tune_malloc()  # optional, first thing: glibc keeps freed memory (False: already tuned)


class Residual(nn.Module):
    """A block with a forward of its own: cnnlstm runs it as it is."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


# frames (B, 3, H, W) -> maps (B, 32, H/4, W/4); chains of standard modules get cnnlstm's training paths
backbone = nn.Sequential(
    nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
    Residual(16),
    nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True), nn.AvgPool2d(2),
)  # fmt: skip
torch.manual_seed(0)
model = cnnlstm.CNNLSTM(input_shape=(8, 3, 32, 32), num_classes=4, backbone=backbone, bridge="grid", hidden_size=32)
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
x = torch.randn(16, 8, 3, 32, 32)  # (N, T, C, H, W): 16 clips of 8 frames
y = torch.randint(0, 4, (16,))

model.train()
t0 = time.perf_counter()
for _ in range(20):
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
print(f"allocator tuned here: {tuned}; 20 steps in {time.perf_counter() - t0:.2f} s; loss {loss.item():.3f}")

model.eval()
with torch.inference_mode(), model.autocast("auto"):  # bfloat16 where this CPU computes it natively
    probs = model(x).softmax(-1)  # (16, 4), float32 out
accuracy = (probs.argmax(-1) == y).float().mean()
print(f"inference in {resolve_precision('auto')} (auto on this CPU): accuracy on the training clips {accuracy:.2f}")
