"""Case 1 of the original question: an image's feature map read as a sequence of positions.

A CNN turns each image into maps (N, C, H, W); the `spatial` bridge reads them row by row
as (N, H*W, C), one step per position, and an LSTM runs over the positions.
"""

import torch
from torch import nn

import cnnlstm as cl

torch.manual_seed(0)
images = torch.randn(4, 3, 64, 64)  # (N, C, H, W)

# By hand with the building blocks: no size typed anywhere.
cnn = cl.SmallCNN(in_channels=3, channels=(16, 32, 64))  # (N, 3, 64, 64) -> (N, 64, 8, 8)
to_seq = cl.bridge("spatial")  # (N, C, H, W) -> (N, H*W, C)
n, steps, features = to_seq.output_shape(tuple(cl.infer(cnn, images.shape)))
rnn = cl.Temporal(input_size=features, hidden_size=32)
seq = to_seq(cnn(images))
states, _ = rnn(seq)
print(f"maps {tuple(cnn(images).shape)} -> sequence {tuple(seq.shape)} -> LSTM states {tuple(states.shape)}")

# The same as one model.
model = cl.CNNLSTM(
    layout="NCHW",
    input_shape=(3, 64, 64),
    bridge="spatial",
    hidden_size=32,
    num_classes=5,
    backbone_options={"channels": (16, 32, 64)},
)
logits = model(images)
loss = nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3]))
loss.backward()
print(f"CNNLSTM(layout='NCHW', bridge='spatial'): {tuple(images.shape)} -> logits {tuple(logits.shape)}")
assert logits.shape == (4, 5) and seq.shape == (4, 64, 64)
