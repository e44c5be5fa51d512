"""Sample and class weights weigh every term per example, as Keras weighs the task loss."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import plain_net

import keras_at

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
ALL_TERMS = {"beta": 100.0, "alpha": 0.5, "hint_beta": 3.0, "grad_beta": 10.0,
             "symmetry_beta": 1.0, "input_grad_penalty": 1.0, "symmetry_output_beta": 1.0}
GROUPS = ("group0", "group1")


def distiller(learning_rate, **weights):
    keras.utils.set_random_seed(1)
    # No BatchNormalization: batch statistics would mix the examples a weight tells apart.
    model = keras_at.Distiller(plain_net(4, "s"), plain_net(8, "t"), **weights)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss=CE)
    return model


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 16, 16, 3)).astype("float32"), rng.integers(0, 5, size=n)


def one_step(model, x, y, **kwargs):
    """One step on the whole batch: (its logs, the student's and adapters' weights after it)."""
    history = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0, **kwargs)
    return ({k: v[0] for k, v in history.history.items()},
            [v.numpy() for v in model.trainable_variables])


def test_examples_of_weight_zero_train_nothing_through_any_term():
    x, y = data(8)
    noise, labels = data(8, seed=1)
    weight = np.r_[np.ones(8), np.zeros(8)]
    # sum(w * l) / B over 16 examples, 8 of them weighted 0, is half the mean over the 8:
    # the same update as the 8 alone at half the learning rate.
    weighted, weighted_vars = one_step(distiller(0.2, **ALL_TERMS), np.r_[x, 10 * noise],
                                       np.r_[y, labels], sample_weight=weight)
    alone, alone_vars = one_step(distiller(0.1, **ALL_TERMS), x, y)

    assert set(weighted) == set(alone) == {"loss", "task_loss", "at_loss", "kd_loss", "hint_loss",
                                           "grad_at_loss", "symmetry_loss", "input_grad_loss",
                                           "symmetry_output_loss"}
    for key, value in alone.items():
        assert weighted[key] == pytest.approx(0.5 * value, rel=1e-4), key
    assert len(weighted_vars) == 6 + 2  # two convolutions, the head, two hint adapters
    for got, expected in zip(weighted_vars, alone_vars, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def per_example_terms(model, x, y, temperature):
    """Each example's task, AT, KD and input-gradient terms, computed one example at a time."""
    student, teacher = model.student, model.teacher
    s_taps = keras.Model(student.input, [student.get_layer(n).output for n in GROUPS])
    t_taps = keras.Model(teacher.input, [teacher.get_layer(n).output for n in GROUPS])
    terms = {"task_loss": [], "at_loss": [], "kd_loss": [], "input_grad_loss": []}
    for i in range(len(x)):
        xi, yi = tf.constant(x[i:i + 1]), y[i:i + 1]
        with tf.GradientTape() as tape:
            tape.watch(xi)
            logits = student(xi)
            task = CE(yi, logits)
        gradient = tape.gradient(task, xi).numpy()
        terms["task_loss"].append(float(task))
        terms["at_loss"].append(sum(float(keras_at.at_loss(s, t))
                                    for s, t in zip(s_taps(xi), t_taps(xi))))
        terms["kd_loss"].append(float(keras_at.kd_loss(logits, teacher(xi), temperature)))
        terms["input_grad_loss"].append(0.5 * float(np.sum(gradient ** 2)))
    return {k: np.array(v) for k, v in terms.items()}


def test_logged_terms_are_the_weighted_means_and_class_weight_is_sample_weight():
    x, y = data(16)
    class_weight = {0: 0.0, 1: 2.0, 2: 0.5, 3: 1.0, 4: 3.0}
    weight = np.array([class_weight[c] for c in y], "float32")
    weights = {"beta": 100.0, "alpha": 0.5, "temperature": 2.0, "input_grad_penalty": 1.0}
    model = distiller(0.0, **weights)
    by_class, _ = one_step(model, x, y, class_weight=class_weight)

    for key, values in per_example_terms(model, x, y, temperature=2.0).items():
        assert by_class[key] == pytest.approx(np.sum(weight * values) / len(x), rel=1e-4), key
    by_sample, _ = one_step(model, x, y, sample_weight=weight)
    assert by_sample == pytest.approx(by_class, rel=1e-6)
    logs = model.evaluate(x, y, sample_weight=weight, batch_size=8, verbose=0, return_dict=True)
    assert logs == pytest.approx(by_class, rel=1e-5)


def test_sample_weights_must_be_one_per_example():
    x, y = data(8)
    model = distiller(0.1)
    with pytest.raises(ValueError, match=r"one per example, shape \(B,\) or \(B, 1\)"):
        model.fit(x, y, sample_weight=np.ones((8, 2), "float32"), verbose=0)
