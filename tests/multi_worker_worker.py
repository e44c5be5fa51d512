"""One worker of a 2-worker `MultiWorkerMirroredStrategy` cluster, run by test_multi_worker.py.

`python multi_worker_worker.py OUT_JSON MODE [DIR]`, with `TF_CONFIG` naming this worker.
Each worker has one CPU device, so the cluster has two replicas. Modes:

- `fit`: plain Keras's `fit` (its error, if any, recorded as `plain`), then the Distiller's
  `evaluate`, `fit` and `predict`; writes logs, history, predictions and weights to OUT_JSON.
- `backup`: the Distiller's `fit` with `BackupAndRestore` in DIR; the worker whose index is in
  `$KERAS_AT_CRASH_AT` ("worker:epoch") exits abruptly at the start of that epoch.

`python multi_worker_worker.py OUT_JSON single` runs the `fit` mode's Distiller part in one
process on one device: the reference for the global means.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

if sys.argv[2] != "single":
    # Collective ops must be configured before TensorFlow runs anything.
    STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()
else:
    STRATEGY = tf.distribute.get_strategy()

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_at  # noqa: E402

BATCH = 16  # the global batch: 8 examples per worker


def net(width, name):
    # No BatchNormalization: per-replica batch statistics would differ from one device's.
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="group0")(inputs)
    x = keras.layers.Conv2D(2 * width, 3, strides=2, padding="same", activation="relu",
                            name="group1")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5)(x), name=name)


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16, 16, 3)).astype("float32")
    return x, rng.integers(0, 5, size=64)


def make():
    keras.utils.set_random_seed(1)
    with STRATEGY.scope():
        distiller = keras_at.Distiller(net(4, "s"), net(8, "t"), alpha=0.5)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"])
    return distiller


def plain_keras(x, y):
    """The upstream failure (keras-team/keras issue 20585): "ok" once Keras handles it."""
    with STRATEGY.scope():
        model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(),
                                  keras.layers.Dense(5)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    try:
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
        model.evaluate(x, y, batch_size=BATCH, verbose=0)
    except Exception as error:  # noqa: BLE001 - recorded for the expected-failure test
        return f"{type(error).__name__}: {str(error)[:200]}"
    return "ok"


def weights(model):
    return [w.tolist() for w in model.get_weights()]


def fit_mode(out):
    x, y = data()
    result = {}
    if sys.argv[2] != "single":
        result["plain"] = plain_keras(x, y)
        result["replicas"] = STRATEGY.num_replicas_in_sync
    distiller = make()
    teacher = weights(distiller.teacher)
    result["evaluate"] = distiller.evaluate(x, y, batch_size=BATCH, verbose=0,
                                            return_dict=True)
    history = distiller.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    result["history"] = history.history
    result["predict"] = distiller.predict(x, batch_size=BATCH, verbose=0).tolist()
    result["student"] = weights(distiller.student)
    result["teacher_unchanged"] = all(
        np.array_equal(a, b) for a, b in zip(teacher, weights(distiller.teacher))
    )
    with open(out, "w") as f:
        json.dump(result, f)


def main():
    out, mode = sys.argv[1], sys.argv[2]
    if mode in ("fit", "single"):
        fit_mode(out)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
