"""Inference over trained run folders, with no Lightning: evaluate, predict, forecast, score anomalies, stream
a video file, plots, and the demo (whose training step is the one place it reaches :mod:`cnnlstm.tasks`)."""
