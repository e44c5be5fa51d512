"""Shared test setup: TensorFlow backend (JAX for tests/jax), quiet logs, deterministic seeds,
the `slow` marker's rule and the networks several test files share.

A test is marked `slow` (`make test-fast` leaves it out) when it launches a process, builds
an ImageNet-size network (ResNet-34, ResNet-50, 224x224 inputs) or takes more than about 4 s
on its own, as training for several epochs does (docs/development.md). A fixture that does
one of these is declared with `@slow_fixture`: every test using it is then marked `slow` by
`pytest_collection_modifyitems`. A test outside `slow` that starts a Python interpreter
fails, saying so.
"""

import contextlib
import os
import socket
import subprocess
import sys

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


SLOW_FIXTURES = set()


def slow_fixture(*args, **kwargs):
    """`pytest.fixture` for a fixture that launches a process, trains for epochs or builds an
    ImageNet-size network: every test that uses it, directly or through other fixtures, is
    marked `slow`."""

    def decorate(function):
        SLOW_FIXTURES.add(kwargs.get("name", function.__name__))
        return pytest.fixture(*args, **kwargs)(function)

    return decorate


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    # A test that changes Keras's global dtype policy must put back the one it found: later
    # tests would build their networks under it.
    policy = keras.config.dtype_policy()
    yield
    if keras.config.dtype_policy().name != policy.name:
        changed = keras.config.dtype_policy().name
        keras.config.set_dtype_policy(policy)
        pytest.fail(f"the test left Keras's global dtype policy {changed!r}, found {policy.name!r}")


@pytest.fixture(autouse=True)
def _python_processes_only_in_slow_tests(request, monkeypatch):
    """A Python interpreter takes seconds to import TensorFlow: only `slow` tests start one."""
    if request.node.get_closest_marker("slow"):
        return

    class Popen(subprocess.Popen):
        def __init__(self, args, *rest, **kwargs):
            program = args if isinstance(args, (str, bytes, os.PathLike)) else args[0]
            if os.fspath(program) == sys.executable:
                pytest.fail(f"{request.node.nodeid} starts a Python process: mark it "
                            "@pytest.mark.slow (docs/development.md)")
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", Popen)


@contextlib.contextmanager
def reserved_ports(n):
    """`n` ports of 127.0.0.1 that no other process gets until the block ends.

    Each is held by a bound socket that does not listen, with SO_REUSEADDR: Linux gives the
    port to no other bind to port 0 nor outgoing connection, while a worker's gRPC server
    (TensorFlow's; JAX's coordinator), which sets SO_REUSEADDR too, binds it and listens. (A
    port found free and closed before the workers start could be taken in between.)
    """
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
        yield [s.getsockname()[1] for s in sockets]


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


class Batches(keras.utils.PyDataset):
    """The given list of batches as a `PyDataset` (`Batches([])`: data of no batch at all)."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]


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


def _resnet34(backbone):
    from keras_at.models import resnet

    keras.utils.set_random_seed(34)
    return resnet(34, num_classes=2, input_shape=(64, 64, 3), backbone=backbone)


# ResNet-34s for 64x64 images and 2 classes, built once: each build takes seconds. Tests count
# their weights, save them or use them as teachers; none may change them.
@slow_fixture(scope="session")
def resnet34():
    return _resnet34("keras_cv")


@slow_fixture(scope="session")
def resnet34_hub():
    return _resnet34("keras_hub")
