"""Case 3 of the original question: a time-distributed CNN over a 10-frame clip, pooled,
into an LSTM that returns sequences: one prediction per frame.
"""

import torch
from torch import nn

import cnnlstm as cl

torch.manual_seed(0)
clips = torch.randn(3, 10, 3, 48, 48)  # (N, T=10, C, H, W)
frame_labels = torch.randint(0, 6, (3, 10))  # one label per frame

model = cl.CNNLSTM(
    input_shape=(10, 3, 48, 48),
    bridge="gap",
    head="frames",
    hidden_size=32,
    num_classes=6,
    backbone_options={"channels": (16, 32)},
)
print(cl.explain(model, (3, 10, 3, 48, 48)))

opt = torch.optim.Adam(model.parameters(), lr=1e-2)
for step in range(3):
    logits = model(clips)  # (N, T, classes)
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), frame_labels.flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"step {step}: loss {loss.item():.3f}")

# Clips of different lengths in one batch: pad to T and pass lengths; padded frames are skipped.
lengths = torch.tensor([10, 7, 4])
out = model(clips, lengths=lengths)
print(f"per-frame logits {tuple(out.shape)}; padded steps are zero: {bool(out[2, 4:].abs().sum() == 0)}")
assert out.shape == (3, 10, 6)
