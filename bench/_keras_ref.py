"""The reference model in Keras 3 on TensorFlow, TimeDistributed(CNN) + LSTM: the original question's idiom.

Run by bench/speed.py inside its own virtual environment (never a dependency of cnnlstm). Prints one JSON line.
"""

import json
import os
import resource
import sys
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


def main():
    what, batch, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    model = build()
    trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    bn_stats = int(sum(np.prod(v.shape) for v in model.non_trainable_weights))
    x = np.random.default_rng(0).standard_normal((batch, 16, 112, 112, 3)).astype(np.float32)
    y = np.zeros((batch,), np.int64)
    if what == "infer":
        fn = tf.function(lambda a: model(a, training=False))
        fn(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(x).numpy()
            times.append(time.perf_counter() - t0)
    else:
        opt = keras.optimizers.Adam()
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function
        def step(a, b):
            with tf.GradientTape() as tape:
                loss = loss_fn(b, model(a, training=True))
            grads = tape.gradient(loss, model.trainable_weights)
            opt.apply_gradients(zip(grads, model.trainable_weights))
            return loss

        step(x, y)
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
