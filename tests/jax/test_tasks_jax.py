"""Any Keras loss and any task on JAX: names and functions, segmentation with ignore_class,
regression with integer targets (tests/test_tasks.py on TensorFlow). About 15 s in all."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers  # noqa: E402

import keras_at  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="needs KERAS_BACKEND=jax")

SCCE = keras.losses.SparseCategoricalCrossentropy


def network(width, name, outputs=5, per_pixel=False, activation=None):
    keras.utils.set_random_seed(0)  # the same weights for the same arguments
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(width, 3, padding="same", activation="relu", name="group0")(inputs)
    if per_pixel:
        return keras.Model(inputs, layers.Conv2D(outputs, 1)(x), name=name)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(outputs, activation=activation)(x), name=name)


def images(n=8):
    return np.random.default_rng(0).normal(size=(n, 8, 8, 3)).astype("float32")


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy",
                                  keras.losses.sparse_categorical_crossentropy])
def test_a_name_or_a_function_gives_the_loss_instances_first_step(loss):
    y = np.random.default_rng(1).integers(0, 5, 8)

    def first_step(loss):
        distiller = keras_at.Distiller(network(4, "s", activation="softmax"),
                                       network(8, "t", activation="softmax"))
        distiller.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
        return distiller.fit(images(), y, batch_size=8, verbose=0).history["loss"][0]

    assert first_step(loss) == pytest.approx(first_step(SCCE()), rel=1e-6)


def test_segmentation_with_ignore_class_trains_and_refuses_other_labels():
    x = images()
    y = np.random.default_rng(2).integers(0, 5, (8, 8, 8))
    y[:, :2] = 255
    loss = SCCE(from_logits=True, ignore_class=255)
    distiller = keras_at.Distiller(network(4, "s", per_pixel=True),
                                   network(8, "t", per_pixel=True), alpha=0.5, grad_beta=1.0)
    distiller.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss)
    history = distiller.fit(x, y, batch_size=4, epochs=3, verbose=0).history
    assert set(history) == {"loss", "task_loss", "at_loss", "kd_loss", "grad_at_loss"}
    assert history["task_loss"][-1] < history["task_loss"][0]
    y[0, 5, 5] = 7
    with pytest.raises(Exception, match=r"Labels must be in \[0, 5\).*255.*got labels: \[7\]"):
        distiller.evaluate(x, y, verbose=0)


def test_regression_with_integer_targets_trains_and_refuses_kd():
    y = np.random.default_rng(3).integers(-20, 20, 8)
    distiller = keras_at.Distiller(network(4, "s", 1), network(8, "t", 1), beta=10.0)
    distiller.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    history = distiller.fit(images(), y, batch_size=4, epochs=4, verbose=0).history
    assert set(history) == {"loss", "task_loss", "at_loss"}
    assert history["task_loss"][-1] < history["task_loss"][0]
    with pytest.raises(ValueError, match="single unit"):
        distiller.alpha = 0.5
