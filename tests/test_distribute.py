"""Data parallelism, mixed precision and tracing of the Distiller's step."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import slow_fixture, tiny_net

import keras_at
from keras_at.callbacks import BetaScheduler

HERE = os.path.dirname(__file__)


@slow_fixture(scope="module")  # a Python process with two CPU devices
def mirrored():
    """distribute_worker.py's results: one process for every check on two CPU replicas."""
    weights = {"beta": 1e3, "alpha": 0.5, "hint_beta": 3.0, "grad_beta": 10.0,
               "symmetry_beta": 1.0, "input_grad_penalty": 1.0, "symmetry_output_beta": 1.0}
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "distribute_worker.py"), json.dumps(weights)],
        capture_output=True, text=True, timeout=420, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_mirrored_strategy_gives_global_means_and_the_same_update(mirrored):
    result = mirrored
    assert result["replicas"] == 2
    one, two = result["one"], result["two"]
    assert set(one) == set(two) >= {"loss", "task_loss", "at_loss", "kd_loss", "hint_loss",
                                    "grad_at_loss", "symmetry_loss", "input_grad_loss",
                                    "symmetry_output_loss"}
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-4), key
    # Gradients summed over replicas equal the one-device gradient of the global mean.
    for w_one, w_two in zip(result["one_weights"], result["two_weights"]):
        np.testing.assert_allclose(np.array(w_two), np.array(w_one), rtol=1e-4, atol=1e-6)
    # Two replicas fed precomputed teacher gradients: the same losses and update again.
    assert set(result["cached"]) == set(one)
    for key in one:
        assert result["cached"][key] == pytest.approx(one[key], rel=1e-4), key
    for w_one, w_cached in zip(result["one_weights"], result["cached_weights"]):
        np.testing.assert_allclose(np.array(w_cached), np.array(w_one), rtol=1e-4, atol=1e-6)
    # With sample weights (some zero): still the global weighted mean, sum(w * l) / B.
    weighted_one, weighted_two = result["weighted_one"], result["weighted_two"]
    assert set(weighted_one) == set(weighted_two) == set(one)
    for key in one:
        assert weighted_two[key] == pytest.approx(weighted_one[key], rel=1e-4), key
        if key != "accuracy":
            assert abs(weighted_one[key] - one[key]) > 1e-3 * abs(one[key]), key
    for w_one, w_two in zip(result["weighted_one_weights"], result["weighted_two_weights"]):
        np.testing.assert_allclose(np.array(w_two), np.array(w_one), rtol=1e-4, atol=1e-6)


def test_batch_norm_statistics_are_the_mean_of_the_replicas_on_every_replica(mirrored):
    result = mirrored["batch_norm"]
    # A plain Keras fit on two replicas, 2 steps of 16 images, the second replica's 8 of each
    # shifted by +1. Each replica's BatchNorm keeps its own exponential moving average
    # (momentum 0.5, from 0 and 1) of its 8 images' mean and unbiased variance; saving and
    # get_weights read the mean of the two. The mean equals the one-device moving mean here
    # (equal halves, and the average is linear); the variance is the mean of the replicas'
    # variances of their own halves, not the variance of the whole batch of 16.
    pieces = np.array(result["x"]).reshape(2, 2, -1, 3)  # step, replica, position, channel
    mean, variance = np.zeros((2, 3)), np.ones((2, 3))
    for step in pieces:
        mean = 0.5 * mean + 0.5 * step.mean(axis=1)
        variance = 0.5 * variance + 0.5 * step.var(axis=1, ddof=1)
    assert np.abs(mean[0] - mean[1]).min() > 0.3  # the replicas' own averages differ
    copies, read = result["teacher"], result["teacher_read"]
    for name, own in (("bn_in/moving_mean", mean), ("bn_in/moving_variance", variance)):
        np.testing.assert_allclose(copies[name], own, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(read[name], own.mean(axis=0), rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    # That teacher (its copies made equal, as the Distiller does before fit) and a student with
    # gradient AT (second derivatives through BatchNorm), on two replicas fed batches of two
    # equal halves [h, h]: the same run as one device's fed h.
    one, two = result["one"], result["two"]
    assert set(one["history"]) >= {"loss", "at_loss", "kd_loss", "grad_at_loss"}
    for key, values in one["history"].items():
        np.testing.assert_allclose(two["history"][key], values, rtol=1e-4, err_msg=key)
    for key, value in one["evaluate"].items():  # in inference: the moving statistics
        assert two["evaluate"][key] == pytest.approx(value, rel=1e-4), key
    for a, b in zip(one["weights"], two["weights"]):  # the student's, its statistics too
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-4, atol=1e-6)
    for model in ("student", "teacher"):  # every replica ends with the same statistics
        for name, (first, second) in two[model].items():
            np.testing.assert_array_equal(first, second, err_msg=f"{model} {name}")
    for name, (first, _) in two["teacher"].items():
        np.testing.assert_allclose(first, read[name], rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_losses_in_float32(policy, tiny_data):
    x, y = tiny_data
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        student, teacher = tiny_net(4, "s"), tiny_net(8, "t")
        distiller = keras_at.Distiller(student, teacher, alpha=0.5, grad_beta=1.0)
        distiller.compile(optimizer=keras.optimizers.SGD(0.05),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        if policy == "mixed_float16":
            assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
        before = [w.copy() for w in student.get_weights()]
        history = distiller.fit(x, y, batch_size=32, epochs=2, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    for key in ("loss", "at_loss", "kd_loss", "grad_at_loss"):
        assert np.all(np.isfinite(history.history[key])), key
    assert history.history["at_loss"][-1] < history.history["at_loss"][0]
    assert student.get_layer("group0").compute_dtype != "float32"
    assert all(w.dtype == np.float32 for w in student.get_weights())
    assert any(not np.array_equal(a, b) for a, b in zip(before, student.get_weights()))
    maps = distiller.attention_maps(x[:2])
    assert all(s.dtype == np.float32 for s, _ in maps.values())


class CountingDistiller(keras_at.Distiller):
    traces = 0

    def train_step(self, data):
        CountingDistiller.traces += 1  # Python runs only while tracing
        return super().train_step(data)


def test_step_is_traced_once_per_fit_while_weights_change(tiny_pair, tiny_data):
    x, y = tiny_data
    CountingDistiller.traces = 0  # whatever an earlier run of this test counted
    distiller = CountingDistiller(*tiny_pair, alpha=0.5)
    distiller.compile(optimizer="sgd")
    schedule = BetaScheduler(lambda epoch, beta: 1e3 / (epoch + 1))
    alphas = BetaScheduler(lambda epoch, alpha: 0.5 - 0.1 * epoch, weight="alpha")
    history = distiller.fit(x, y, batch_size=32, epochs=3, verbose=0,
                            callbacks=[schedule, alphas])
    assert CountingDistiller.traces == 1
    assert history.history["beta"] == pytest.approx([1e3, 500.0, 1e3 / 3])
    assert history.history["alpha"] == pytest.approx([0.5, 0.4, 0.3])


@pytest.mark.slow  # ~7 s: XLA compiles the step
def test_jit_compile_is_an_option_with_the_same_losses(tiny_data):
    """XLA (off by default on CPU, Keras's "auto") compiles every term to the same values."""
    x, y = tiny_data
    histories = []
    for jit_compile in (False, True):
        keras.utils.set_random_seed(0)
        student, teacher = tiny_net(4, "student"), tiny_net(8, "teacher")
        distiller = keras_at.Distiller(student, teacher, alpha=0.5, hint_beta=1.0,
                                       grad_beta=0.1)
        distiller.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=jit_compile)
        histories.append(distiller.fit(x, y, batch_size=16, epochs=2, shuffle=False,
                                       verbose=0).history)
        assert distiller.jit_compile is jit_compile
    assert set(histories[0]) == {"loss", "task_loss", "at_loss", "kd_loss", "hint_loss",
                                 "grad_at_loss"}
    for key, values in histories[0].items():
        np.testing.assert_allclose(histories[1][key], values, rtol=1e-4, err_msg=key)
