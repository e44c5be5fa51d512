"""The Distiller on the JAX backend: the same API, history keys and numbers as on TensorFlow.

Run by `make test-jax` (KERAS_BACKEND=jax, two host CPU devices through XLA_FLAGS, no
TensorFlow installed). One step equal to TensorFlow's is tests/test_backends.py.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_at  # noqa: E402
from keras_at.callbacks import BetaScheduler  # noqa: E402
from keras_at.models import BatchNorm, wide_resnet  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="needs KERAS_BACKEND=jax")

ALL_TERMS = {"beta": 1e3, "alpha": 0.5, "hint_beta": 1.0, "grad_beta": 10.0,
             "symmetry_beta": 1.0, "input_grad_penalty": 1.0, "symmetry_output_beta": 1.0}


def networks(weight_decay=0.0):
    keras.utils.set_random_seed(0)
    student = wide_resnet(10, 1, input_shape=(8, 8, 3), num_classes=4, weight_decay=weight_decay)
    teacher = wide_resnet(10, 2, input_shape=(8, 8, 3), num_classes=4)
    return student, teacher


def distiller(**weights):
    student, teacher = networks()
    model = keras_at.Distiller(student, teacher, **weights)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), metrics=["accuracy"])
    return model


def training_data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 8, 8, 3)).astype("float32"), rng.integers(0, 4, size=32)


@pytest.fixture(scope="module")
def data():
    return training_data()


def test_fit_evaluate_predict_log_every_term(data):
    x, y = data
    model = distiller(**ALL_TERMS)
    teacher_before = [w.copy() for w in model.teacher.get_weights()]
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    keys = {"loss", "task_loss", "accuracy", "at_loss", "kd_loss", "hint_loss", "grad_at_loss",
            "symmetry_loss", "input_grad_loss", "symmetry_output_loss"}
    assert set(history.history) == keys
    assert all(np.isfinite(v).all() for v in history.history.values())
    logs = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert set(logs) == keys
    predictions = model.predict(x, batch_size=16, verbose=0)
    np.testing.assert_allclose(predictions, keras.ops.convert_to_numpy(
        model.student(x, training=False)), rtol=1e-5, atol=1e-5)
    # The teacher is never trained: not its weights, not its batch-norm statistics.
    for before, after in zip(teacher_before, model.teacher.get_weights()):
        np.testing.assert_array_equal(after, before)


def test_a_callbacks_change_of_a_weight_reaches_the_next_step(data):
    x, y = data
    model = distiller(beta=1e3)
    # beta 1e3 in epoch 0, 0 from epoch 1; alpha (KD) switched on from epoch 2: a term that
    # was off enters the compiled step.
    switch_kd = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: epoch == 2 and setattr(switch_kd.model, "alpha", 0.5))
    history = model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0,
                        callbacks=[BetaScheduler(lambda epoch, beta: 0.0 if epoch >= 1 else beta),
                                   switch_kd])
    h = history.history
    assert h["loss"][0] == pytest.approx(h["task_loss"][0] + 1e3 * h["at_loss"][0], rel=1e-5)
    assert h["loss"][1] == pytest.approx(h["task_loss"][1], rel=1e-6)  # AT weighs 0 now
    assert h["kd_loss"] == [pytest.approx(h["kd_loss"][-1])] and h["kd_loss"][-1] > 0  # epoch 2
    assert h["loss"][2] == pytest.approx(0.5 * h["task_loss"][2] + 0.5 * h["kd_loss"][-1],
                                         rel=1e-5)
    assert model.beta == 0.0 and model.alpha == 0.5


def test_saved_and_loaded_distiller_predicts_alike(data, tmp_path):
    x, y = data
    model = distiller(beta=1e3, hint_beta=1.0)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.beta = 250.0
    path = tmp_path / "distiller.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, keras_at.Distiller) and loaded.beta == 250.0
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    assert (loaded.evaluate(x, y, verbose=0, return_dict=True)["loss"]
            == pytest.approx(model.evaluate(x, y, verbose=0, return_dict=True)["loss"], rel=1e-5))
    # Training goes on alike: the optimizer's state (momentum) was saved and restored.
    for m in (model, loaded):
        m.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.student.get_weights(), loaded.student.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    weights = tmp_path / "distiller.weights.h5"
    model.save_weights(weights)
    fresh = distiller(beta=1e3, hint_beta=1.0)
    fresh.load_weights(weights)
    np.testing.assert_allclose(fresh.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_cached_teacher_gradients_give_the_fresh_step(data):
    x, y = data
    fresh = distiller(beta=0.0, grad_beta=10.0)
    cached = distiller(beta=0.0, grad_beta=10.0)
    gradients = cached.teacher_input_gradients(x, y, batch_size=8)
    assert gradients.shape == x.shape and np.abs(gradients).max() > 0
    a = fresh.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
    b = cached.fit((x, gradients), y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
    for key in a:
        assert b[key][0] == pytest.approx(a[key][0], rel=1e-5), key


def test_labels_outside_the_classes_are_refused_naming_them(data):
    x, y = data
    model = distiller(beta=1e3)
    with pytest.raises(Exception, match=r"Labels must be in \[0, 4\).*7"):
        model.fit(x, np.where(y == 0, 7, y), batch_size=16, epochs=1, verbose=0)


def test_data_parallel_over_two_devices_gives_one_devices_losses(data):
    x, y = data
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) == 2, "set XLA_FLAGS=--xla_force_host_platform_device_count=2"

    def run(distribution):
        keras.distribution.set_distribution(distribution)
        try:
            model = distiller(**ALL_TERMS)
            history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
            return history.history, [np.asarray(w) for w in model.student.get_weights()]
        finally:
            keras.distribution.set_distribution(None)

    one, one_weights = run(None)
    two, two_weights = run(keras.distribution.DataParallel(devices=devices))
    assert set(two) == set(one)
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-4, err_msg=key)
    for a, b in zip(one_weights, two_weights):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_batch_norm_on_jax_is_keras_normalisation_with_torch_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=(4, 3, 3, 5)).astype("float32")
    ours = BatchNorm(momentum=0.9, epsilon=1e-5)
    ours.build(x.shape)
    keras_bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    keras_bn.build(x.shape)
    np.testing.assert_allclose(ours(x, training=True), keras_bn(x, training=True),
                               rtol=1e-5, atol=1e-5)
    unbiased = x.reshape(-1, 5).var(axis=0, ddof=1)
    np.testing.assert_allclose(ours.moving_variance, 0.9 + 0.1 * unbiased, rtol=1e-5)
    # Inference normalises with the moving statistics (γ = 1, β = 0 here).
    moving_mean, moving_variance = np.asarray(ours.moving_mean), np.asarray(ours.moving_variance)
    np.testing.assert_allclose(ours(x, training=False),
                               (x - moving_mean) / np.sqrt(moving_variance + 1e-5),
                               rtol=1e-5, atol=1e-5)


def test_batch_norm_second_derivative_on_jax_matches_float64_finite_differences():
    """d/dγ of ||d/dx Σ w·BN(x)||²: what double backprop differentiates, in training mode."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 3, 2))
    w = rng.normal(size=(2, 3, 3, 2))
    layer = BatchNorm(epsilon=1e-3)
    layer.build(x.shape)

    def penalty(gamma):
        def out(x):
            with keras.StatelessScope(state_mapping=[(layer.gamma, gamma)]):
                return (layer(x, training=True) * w).sum()
        return (jax.grad(out)(x.astype("float32")) ** 2).sum()

    gamma = np.array([0.7, 1.3], "float32")
    analytic = np.asarray(jax.grad(penalty)(gamma))

    def reference(gamma):  # the same penalty in float64 numpy, by hand
        mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
        x_hat, inv = (x - mean) / np.sqrt(var + 1e-3), 1 / np.sqrt(var + 1e-3)
        dy = w * gamma
        dx = inv * (dy - dy.mean((0, 1, 2)) - x_hat * (dy * x_hat).mean((0, 1, 2)))
        return (dx ** 2).sum()

    eps = 1e-6
    numeric = [(reference(gamma + eps * e) - reference(gamma - eps * e)) / (2 * eps)
               for e in np.eye(2)]
    np.testing.assert_allclose(analytic, numeric, rtol=1e-3)


def test_sample_weights_weigh_every_term_per_example(data):
    x, y = data
    model = distiller(**ALL_TERMS)
    plain = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    doubled = model.evaluate(x, y, sample_weight=np.full(len(y), 2.0), batch_size=32, verbose=0,
                             return_dict=True)
    for key, value in plain.items():  # sum_b w_b * term_b / B with every w_b = 2
        if key == "accuracy":  # a weighted mean: the same
            assert doubled[key] == pytest.approx(value)
            continue
        assert doubled[key] == pytest.approx(2 * value, rel=1e-4), key
    # Weight 0 for the second half: each term is half the first half's own mean.
    half = model.evaluate(x[:16], y[:16], batch_size=16, verbose=0, return_dict=True)
    masked = model.evaluate(x, y, sample_weight=np.repeat([1.0, 0.0], 16), batch_size=32,
                            verbose=0, return_dict=True)
    for key in ("task_loss", "at_loss", "kd_loss", "grad_at_loss", "input_grad_loss"):
        assert masked[key] == pytest.approx(half[key] / 2, rel=1e-4), key
