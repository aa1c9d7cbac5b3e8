"""A Keras-layout array (N, T, H, W, C), as TensorFlow code produces it, straight into CNNLSTM.

layout="NTHWC" permutes once at the model's entry; nothing else changes.
"""

import numpy as np
import torch

import cnnlstm as cl

rng = np.random.default_rng(0)
videos = rng.random((2, 12, 64, 64, 3), dtype=np.float32)  # (N, T, H, W, C), channels last

model = cl.CNNLSTM(
    layout="NTHWC", input_shape=(12, 64, 64, 3), num_classes=3, hidden_size=32, backbone_options={"channels": (16, 32)}
)
logits = model(torch.from_numpy(videos))
print(f"NTHWC {videos.shape} -> logits {tuple(logits.shape)}")

# Feeding the same array to a model built for NTCHW is caught, with the fix:
try:
    cl.CNNLSTM(input_shape=(12, 3, 64, 64), num_classes=3, backbone_options={"channels": (16, 32)})(
        torch.from_numpy(videos)
    )
except cl.ShapeError as e:
    print(f"ShapeError: {e}")
assert logits.shape == (2, 3)
