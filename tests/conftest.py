"""Shared test setup: TensorFlow backend (JAX for tests/jax), quiet logs, deterministic seeds."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns oneDNN on by itself only on CPUs with AVX-512 or AMX; on others (the
# AVX2 AMD EPYC here) a WRN training step is 1.8x slower without it (README).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras  # noqa: E402
import pytest  # noqa: E402

# tests/jax runs with KERAS_BACKEND=jax, in make test-jax's virtual environment without
# TensorFlow; the other tests run on TensorFlow.
collect_ignore = ["jax"] if keras.backend.backend() != "jax" else []


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield


class AtBatch(keras.callbacks.Callback):
    """Calls `action(model)` at the end of batch `batch` of epoch `epoch` (both counted from 0):
    a save, an exception or a kill at a chosen point of `fit`."""

    def __init__(self, epoch, batch, action):
        super().__init__()
        self.epoch, self.batch, self.action, self.current = epoch, batch, action, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.current, batch) == (self.epoch, self.batch):
            self.action(self.model)  # on JAX, `self.model` syncs the state: read only here


def tiny_net(width=4, name=None, classes=5, size=16, channels=3):
    """A two-group CNN: `group0` at full resolution, `group1` at half."""
    inputs = keras.Input((size, size, channels))
    x = keras.layers.Conv2D(width, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    g0 = keras.layers.ReLU(name="group0")(x)
    x = keras.layers.Conv2D(2 * width, 3, strides=2, padding="same")(g0)
    g1 = keras.layers.ReLU(name="group1")(x)
    x = keras.layers.GlobalAveragePooling2D()(g1)
    return keras.Model(inputs, keras.layers.Dense(classes, name="head")(x), name=name)


def plain_net(width, name):
    """`tiny_net` without BatchNormalization: every example's output depends on it alone.

    For comparisons that split a batch (sample weights, replicas), which batch statistics
    would mix.
    """
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="group0")(inputs)
    x = keras.layers.Conv2D(2 * width, 3, strides=2, padding="same", activation="relu",
                            name="group1")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5)(x), name=name)


@pytest.fixture
def tiny_pair():
    return tiny_net(4, "student"), tiny_net(8, "teacher")


@pytest.fixture
def tiny_data():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 5, size=64)
    return x, y


def fit_one_epoch(distiller, size, classes, n=8):
    """Compiles `distiller` and fits it for one epoch of two batches of random images."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, size, size, 3)).astype("float32")
    y = rng.integers(0, classes, size=n)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss, jit_compile=False)
    return distiller.fit(x, y, batch_size=n // 2, epochs=1, verbose=0).history
