"""The small CNN of the distribution workers (distribute_worker.py, multi_worker_worker.py)."""

import keras


def net(width, name):
    # No BatchNormalization: per-replica batch statistics would differ from one device's.
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="group0")(inputs)
    x = keras.layers.Conv2D(2 * width, 3, strides=2, padding="same", activation="relu",
                            name="group1")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5)(x), name=name)
