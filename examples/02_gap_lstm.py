"""Case 2 of the original question: global average pooling per frame, then an LSTM.

Each frame's maps (C, H, W) shrink to their C channel means; the clip becomes (N, T, C),
exactly what an LSTM with batch_first=True reads. input_size is inferred, not computed.
"""

import torch

import cnnlstm as cl

torch.manual_seed(0)
clips = torch.randn(2, 8, 3, 64, 64)  # (N, T, C, H, W)

frames_cnn = cl.TimeDistributed(cl.SmallCNN(3, channels=(16, 32)))  # (N, T, 3, 64, 64) -> (N, T, 32, 16, 16)
pool = cl.bridge("gap")  # (N, T, C, H, W) -> (N, T, C)
maps = cl.infer(frames_cnn, clips.shape)
_, _, features = pool.output_shape(tuple(maps))
rnn = cl.Temporal(input_size=features, hidden_size=64, rnn="lstm")
classify = cl.head("last", rnn.out_features, num_classes=4)

states, _ = rnn(pool(frames_cnn(clips)))
logits = classify(states)
print(f"clip {tuple(clips.shape)} -> maps {tuple(maps)} -> gap {(2, 8, features)} -> logits {tuple(logits.shape)}")

# The mistake this avoids, as the shape doctor sees it: maps fed straight to an LSTM.
wrong = torch.nn.Sequential(frames_cnn, torch.nn.LSTM(512, 64, batch_first=True))
print(cl.diagnose(wrong, tuple(clips.shape)).error)
assert logits.shape == (2, 4)
