"""Run by test_distribute.py in a fresh process: 2 logical CPU devices must exist before TF starts.

Prints one JSON line: evaluate() logs on one device and under MirroredStrategy over two, and
the student's weights after one identical SGD step in both settings; with gradient AT on, also
the two-device run fed the teacher's input gradients precomputed (`teacher_input_gradients`).
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
from worker_nets import net  # noqa: E402

import keras_at  # noqa: E402


def make(weights):
    keras.utils.set_random_seed(1)
    student, teacher = net(4, "s"), net(8, "t")
    distiller = keras_at.Distiller(student, teacher, **weights)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"])
    return distiller


def run(strategy, weights, x, y, cached=False):
    with strategy.scope():
        distiller = make(weights)
    inputs = (x, distiller.teacher_input_gradients(x, y)) if cached else x
    logs = distiller.evaluate(inputs, y, batch_size=32, verbose=0, return_dict=True)
    distiller.fit(inputs, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    return logs, [w.tolist() for w in distiller.student.get_weights()]


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
    print(json.dumps(result))


if __name__ == "__main__":
    main()
