"""What the Distiller refuses on JAX, and how: as the error that names the problem; and what a loop
that fails on the way leaves: the weights of the last step that finished, the teacher's intact.

Run by `make test-jax` (KERAS_BACKEND=jax, no TensorFlow installed).
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import threading  # noqa: E402

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import Batches, tiny_net  # noqa: E402

import keras_at  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="needs KERAS_BACKEND=jax")


def compiled(student=None, teacher=None, **weights):
    model = keras_at.Distiller(student or tiny_net(4, "student"), teacher or tiny_net(8, "teacher"),
                               **weights)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    return model


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 16, 16, 3)).astype("float32"), rng.integers(0, 5, size=16)


def test_a_label_outside_the_classes_is_a_value_error_not_a_callback_error(data):
    x, y = data
    with pytest.raises(ValueError, match=r"[Ll]abels.*\b7\b") as error:
        compiled().fit(x, np.where(y == y[0], 7, y), batch_size=16, verbose=0)
    assert isinstance(error.value.__cause__, jax.errors.JaxRuntimeError)  # from the step
    assert "CpuCallback" not in str(error.value)


def weights(network):
    return [w.copy() for w in network.get_weights()]


def assert_same(got, expected, **tolerance):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, **tolerance)


def test_a_loop_failing_in_its_first_step_keeps_every_weight(data):
    """Keras takes the weights out of the variables when a loop starts, and its compiled step
    consumes (donates) them; a bad label raised from the first step left both networks
    without weights. Now they are all back, and the next fit trains."""
    x, y = data
    model = compiled()
    model.fit(x, y, batch_size=16, verbose=0)
    student, teacher = weights(model.student), weights(model.teacher)
    bad = np.where(y == y[0], 7, y)
    for method in (model.fit, model.evaluate):
        with pytest.raises(ValueError, match=r"[Ll]abels"):
            method(x, bad, batch_size=16, verbose=0)
        assert_same(weights(model.student), student, rtol=0, atol=0)
        assert_same(weights(model.teacher), teacher, rtol=0, atol=0)
    model.fit(x, y, batch_size=16, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(weights(model.student), student))
    assert_same(weights(model.teacher), teacher, rtol=0, atol=0)


def test_a_loop_failing_later_keeps_the_steps_that_finished(data):
    """A bad label in the third batch: the student has the two steps before it, exactly as a
    fit on those two batches gives it; the teacher is unchanged."""
    x, y = data
    bad = y.copy()
    bad[9] = 7  # the third batch of 4
    model = compiled()
    start = weights(model.student), weights(model.teacher)
    twin = compiled(tiny_net(4, "student"), tiny_net(8, "teacher"))
    twin.student.set_weights(start[0])
    twin.teacher.set_weights(start[1])

    with pytest.raises(ValueError, match=r"[Ll]abels.*\b7\b"):
        model.fit(x, bad, batch_size=4, shuffle=False, verbose=0)
    twin.fit(x[:8], y[:8], batch_size=4, shuffle=False, verbose=0)
    assert_same(weights(model.student), weights(twin.student), rtol=1e-5, atol=1e-6)
    assert any(not np.array_equal(a, b) for a, b in zip(weights(model.student), start[0]))
    assert_same(weights(model.teacher), start[1], rtol=0, atol=0)
    assert model.predict(x, verbose=0).shape == (16, 5)


class _Interrupt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 1:
            raise KeyboardInterrupt


def test_an_interrupted_fit_keeps_its_weights(data):
    x, y = data
    model = compiled()
    teacher = weights(model.teacher)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=4, callbacks=[_Interrupt()], verbose=0)
    assert all(np.isfinite(w).all() for w in weights(model.student))
    assert_same(weights(model.teacher), teacher, rtol=0, atol=0)
    model.fit(x, y, batch_size=4, verbose=0)  # and it trains on


def test_a_student_frozen_after_a_fit_asks_for_compile_and_then_stays_frozen(data):
    x, y = data
    model = compiled(hint_beta=1.0)
    model.fit(x, y, batch_size=16, verbose=0)
    model.student.trainable = False
    student = [w.copy() for w in model.student.get_weights()]
    with pytest.raises(ValueError, match=r"changed since the optimizer.*distiller\.compile"):
        model.fit(x, y, batch_size=16, verbose=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1))  # refused before any step: still usable
    model.fit(x, y, batch_size=16, verbose=0)
    for before, after in zip(student, model.student.get_weights()):
        np.testing.assert_array_equal(after, before)


def test_empty_data_is_refused_by_evaluate_and_predict(data):
    x, y = data
    model = compiled()
    for method, args in (("evaluate", (x[:0], y[:0])), ("evaluate", (Batches([]),)),
                         ("predict", (x[:0],)), ("predict", (Batches([]),))):
        with pytest.raises(ValueError, match=rf"empty: {method}\(\)"):
            getattr(model, method)(*args, verbose=0)
    with pytest.raises(ValueError, match="validation data is empty"):
        model.fit(x, y, validation_data=(x[:0], y[:0]), verbose=0)
    assert model.predict(x, verbose=0).shape == (16, 5)  # the weights are still there


class _Hold(keras.callbacks.Callback):
    """Pauses a fit after its first batch until released; reads nothing of the model (on JAX,
    `self.model` would attach the weights to the variables again)."""

    def __init__(self):
        super().__init__()
        self.started, self.release = threading.Event(), threading.Event()

    def on_train_batch_end(self, batch, logs=None):
        self.started.set()
        self.release.wait(60)


def test_a_teacher_in_use_in_another_thread_is_refused_naming_it(data):
    x, y = data
    teacher = tiny_net(8, "shared_teacher")
    first, second = compiled(tiny_net(4, "s1"), teacher), compiled(tiny_net(4, "s2"), teacher)
    hold, results = _Hold(), []
    thread = threading.Thread(target=lambda: results.append(
        first.fit(x, y, batch_size=8, epochs=1, callbacks=[hold], verbose=0).history))
    thread.start()
    try:
        assert hold.started.wait(60)
        for call in (lambda: second.fit(x, y, batch_size=8, verbose=0),
                     lambda: second.predict(x, verbose=0)):
            with pytest.raises(RuntimeError, match="teacher 'shared_teacher' is in use"):
                call()
    finally:
        hold.release.set()
        thread.join(60)
    assert np.isfinite(results[0]["loss"]).all()  # the first fit went on undisturbed
    assert np.isfinite(second.fit(x, y, batch_size=8, verbose=0).history["loss"]).all()
