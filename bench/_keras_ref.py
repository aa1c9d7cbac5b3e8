"""The reference model in Keras 3 on TensorFlow, TimeDistributed(CNN) + LSTM: the original question's idiom.

Run by bench/speed.py (``infer``/``train`` BATCH REPEATS) and bench/op_profile.py (``profile`` BATCH) inside its
own virtual environment (never a dependency of cnnlstm). Prints one JSON line.
"""

import collections
import json
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras
import numpy as np
import tensorflow as tf


def build(t=16, h=112, w=112):
    inp = keras.Input((t, h, w, 3))
    cnn = keras.Sequential([keras.Input((h, w, 3))])
    for c in (32, 64, 128, 256):
        cnn.add(keras.layers.Conv2D(c, 3, padding="same", use_bias=False))
        cnn.add(keras.layers.BatchNormalization())
        cnn.add(keras.layers.ReLU())
        cnn.add(keras.layers.MaxPooling2D(2))
    cnn.add(keras.layers.GlobalAveragePooling2D())
    x = keras.layers.TimeDistributed(cnn)(inp)
    x = keras.layers.LSTM(256)(x)
    out = keras.layers.Dense(10)(x)
    return keras.Model(inp, out)


def train_step(model):
    """One compiled training step (forward, backward, Adam) of ``model``: ``step(x, y) -> loss``."""
    opt = keras.optimizers.Adam()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(a, b):
        with tf.GradientTape() as tape:
            loss = loss_fn(b, model(a, training=True))
        grads = tape.gradient(loss, model.trainable_weights)
        opt.apply_gradients(zip(grads, model.trainable_weights))
        return loss

    return step


STEPS = 3  # profiled steps; times are per step


def _op_times(logdir: str) -> dict:
    """Thread time per TF op type (ms) from the profiler's XSpace, summed over TF's compute threads."""
    from pathlib import Path

    try:
        from tsl.profiler.protobuf import xplane_pb2
    except ImportError:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
    space = xplane_pb2.XSpace()
    space.ParseFromString(sorted(Path(logdir).rglob("*.xplane.pb"))[-1].read_bytes())
    ops, calls, threads = collections.Counter(), collections.Counter(), 0
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            threads += 1
            for e in line.events:
                name = names.get(e.metadata_id, "?")
                if ":" in name and "::" not in name:  # "layer/op:OpType"; ExecutorState::Process is not an op
                    kind = name.rsplit(":", 1)[-1]
                    ops[kind] += e.duration_ps / 1e9
                    calls[kind] += 1
    return {"threads": threads, "ops": {k: {"ms": v, "calls": calls[k]} for k, v in ops.most_common()}}


def profile(batch):
    """One inference and one training step under TF's profiler: wall ms and thread ms per op type."""
    model = build()
    x = np.random.default_rng(0).standard_normal((batch, 16, 112, 112, 3)).astype(np.float32)
    y = np.zeros((batch,), np.int64)
    infer = tf.function(lambda a: model(a, training=False))
    train = train_step(model)
    out = {}
    for name, step in (("inference", lambda: infer(x).numpy()), ("training", lambda: train(x, y).numpy())):
        step()
        step()
        with tempfile.TemporaryDirectory() as logdir:
            tf.profiler.experimental.start(logdir)
            t0 = time.perf_counter()
            for _ in range(STEPS):
                step()
            wall = (time.perf_counter() - t0) / STEPS
            tf.profiler.experimental.stop()
            times = _op_times(logdir)
            for o in times["ops"].values():
                o["ms"] /= STEPS
                o["calls"] //= STEPS
            out[name] = {"wall_ms": wall * 1e3, **times}
    print(json.dumps({"profile": out, "versions": {"tensorflow": tf.__version__, "keras": keras.__version__}}))


def main():
    if sys.argv[1] == "profile":
        return profile(int(sys.argv[2]))
    what, batch, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    warm = int(sys.argv[4]) if len(sys.argv) > 4 else 2  # untimed calls or steps, as bench/speed.py's children
    model = build()
    trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    bn_stats = int(sum(np.prod(v.shape) for v in model.non_trainable_weights))
    x = np.random.default_rng(0).standard_normal((batch, 16, 112, 112, 3)).astype(np.float32)
    y = np.zeros((batch,), np.int64)
    if what == "infer":
        fn = tf.function(lambda a: model(a, training=False))
        for _ in range(warm):  # the first one traces
            fn(x).numpy()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(x).numpy()
            times.append(time.perf_counter() - t0)
    else:
        step = train_step(model)
        for _ in range(warm):  # the first one traces
            step(x, y).numpy()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step(x, y).numpy()
            times.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "times": times,
                "trainable": trainable,
                "bn_stats": bn_stats,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
            }
        )
    )


if __name__ == "__main__":
    main()
