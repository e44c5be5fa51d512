"""Run by test_distribute.py in a fresh process: 2 logical CPU devices must exist before TF starts.

Prints one JSON line: evaluate() logs on one device and under MirroredStrategy over two, and
the student's weights after one identical SGD step in both settings; with gradient AT on, also
the two-device run fed the teacher's input gradients precomputed (`teacher_input_gradients`);
and both settings again with sample weights, a quarter of them zero. Then `batch_norm`:
BatchNorm's moving statistics under MirroredStrategy (`batch_norm_checks`).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from conftest import plain_net as net  # noqa: E402  (no BN: one device's batch would differ)

import keras_at  # noqa: E402
from keras_at.models import BatchNorm  # noqa: E402


def make(weights):
    keras.utils.set_random_seed(1)
    student, teacher = net(4, "s"), net(8, "t")
    distiller = keras_at.Distiller(student, teacher, **weights)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"])
    return distiller


def run(strategy, weights, x, y, cached=False, sample_weight=None):
    with strategy.scope():
        distiller = make(weights)
    inputs = (x, distiller.teacher_input_gradients(x, y)) if cached else x
    logs = distiller.evaluate(inputs, y, sample_weight=sample_weight, batch_size=32, verbose=0,
                              return_dict=True)
    distiller.fit(inputs, y, sample_weight=sample_weight, batch_size=32, epochs=1,
                  shuffle=False, verbose=0)
    return logs, [w.tolist() for w in distiller.student.get_weights()]


def bn_net(width, name):
    """A net whose first layer is a BatchNorm, whose statistics the images alone decide."""
    inputs = keras.Input((8, 8, 3))
    x = BatchNorm(momentum=0.5, name="bn_in")(inputs)
    x = keras.layers.Conv2D(width, 3, padding="same")(x)
    x = keras.layers.ReLU(name="group0")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5)(x), name=name)


def statistics(model):
    """`{path: [each replica's copy]}` of the moving statistics (one copy outside a strategy)."""
    return {w.path: [c.numpy().tolist() for c in getattr(w.value, "values", [w.value])]
            for w in model.weights if "moving" in w.name}


def batch_norm_checks(mirrored):
    """A teacher fit by plain Keras under `mirrored` on images whose two halves of each batch
    differ (its statistics, each replica's copy, and what `get_weights` reads), then a Distiller
    with gradient AT from it, on two replicas fed batches of two equal halves [h, h], and on one
    device fed the halves h, with the same teacher: histories, weights, statistics and
    evaluate of both."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(32, 8, 8, 3)).astype("float32")
    x[np.arange(32) % 16 >= 8] += 1.0  # the second replica's half of each batch of 16
    y = rng.integers(0, 5, size=32)
    test_x = rng.normal(size=(16, 8, 8, 3)).astype("float32")
    test_y = rng.integers(0, 5, size=16)
    keras.utils.set_random_seed(2)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with mirrored.scope():
        teacher = bn_net(8, "t")
        teacher.compile(keras.optimizers.SGD(0.1), loss)
    teacher.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    result = {"x": x.tolist(), "teacher": statistics(teacher),
              "teacher_read": {w.path: w.numpy().tolist() for w in teacher.weights}}
    doubled = np.concatenate([np.concatenate([h, h]) for h in np.split(x[:16], 2)])
    doubled_y = np.concatenate([np.concatenate([h, h]) for h in np.split(y[:16], 2)])
    for key, strategy, data, batch in (("one", tf.distribute.get_strategy(), (x[:16], y[:16]), 8),
                                       ("two", mirrored, (doubled, doubled_y), 16)):
        with strategy.scope():
            if key == "one":  # the same teacher: its statistics as the strategy reads them
                copy = bn_net(8, "t")
                copy.set_weights(teacher.get_weights())
            keras.utils.set_random_seed(1)
            distiller = keras_at.Distiller(bn_net(4, "s"), copy if key == "one" else teacher,
                                           pairs=[("group0", "group0")], alpha=0.5,
                                           grad_beta=10.0)
            distiller.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"])
        history = distiller.fit(*data, batch_size=batch, epochs=1, shuffle=False, verbose=0)
        result[key] = {
            "history": history.history,
            "weights": [w.tolist() for w in distiller.student.get_weights()],
            "student": statistics(distiller.student), "teacher": statistics(distiller.teacher),
            "evaluate": distiller.evaluate(test_x, test_y, batch_size=16, verbose=0,
                                           return_dict=True),
        }
    return result


def main():
    weights = json.loads(sys.argv[1])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 5, size=64)
    one_logs, one_weights = run(tf.distribute.get_strategy(), weights, x, y)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    two_logs, two_weights = run(mirrored, weights, x, y)
    result = {"replicas": mirrored.num_replicas_in_sync, "one": one_logs, "two": two_logs,
              "one_weights": one_weights, "two_weights": two_weights}
    if weights.get("grad_beta"):
        result["cached"], result["cached_weights"] = run(mirrored, weights, x, y, cached=True)
    sample_weight = rng.uniform(0.5, 2.0, size=len(y)) * (rng.uniform(size=len(y)) > 0.25)
    for key, strategy in (("weighted_one", tf.distribute.get_strategy()),
                          ("weighted_two", mirrored)):
        result[key], result[f"{key}_weights"] = run(strategy, weights, x, y,
                                                    sample_weight=sample_weight)
    result["batch_norm"] = batch_norm_checks(mirrored)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
