"""Attention maps and transfer losses against NumPy references written here."""

import numpy as np
import pytest

import keras_at
from keras_at.losses import hint_loss, input_gradient_distance


def np_map(a, p, reduction):
    powered = np.abs(a.astype(np.float64)) ** p
    return {"sum": powered.sum(-1), "mean": powered.mean(-1), "max": powered.max(-1)}[reduction]


def np_normalize(m):
    flat = m.reshape(len(m), -1)
    return flat / np.linalg.norm(flat, axis=1, keepdims=True)


def np_at_loss(s, t, p, reduction):
    return np.mean((np_normalize(np_map(s, p, reduction)) - np_normalize(np_map(t, p, reduction)))
                   ** 2)


def np_kd(s, t, temperature):
    def log_softmax(z):
        z = z / temperature
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    log_ps, log_pt = log_softmax(s.astype(np.float64)), log_softmax(t.astype(np.float64))
    return temperature**2 * np.mean(np.sum(np.exp(log_pt) * (log_pt - log_ps), -1))


# Constants; each test that draws more has its own generator, so no draw depends on test order.
S = np.random.default_rng(0).normal(size=(3, 6, 5, 7)).astype("float32")
T = np.random.default_rng(1).normal(size=(3, 6, 5, 11)).astype("float32")


@pytest.mark.parametrize("p", [1, 2, 3, 4, 0.5, 2.5])
@pytest.mark.parametrize("reduction", ["sum", "mean", "max"])
def test_attention_map_matches_numpy(p, reduction):
    got = np.asarray(keras_at.attention_map(S, p=p, reduction=reduction))
    assert got.shape == (3, 6, 5)
    np.testing.assert_allclose(got, np_map(S, p, reduction), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("p", [1, 2, 4])
@pytest.mark.parametrize("reduction", ["sum", "mean", "max"])
def test_at_loss_matches_numpy_with_different_channel_counts(p, reduction):
    got = float(keras_at.at_loss(S, T, p=p, reduction=reduction))
    np.testing.assert_allclose(got, np_at_loss(S, T, p, reduction), rtol=1e-5)


def test_at_loss_resizes_teacher_map_bilinearly():
    import tensorflow as tf

    rng = np.random.default_rng(2)
    teacher = rng.normal(size=(3, 12, 10, 4)).astype("float32")
    t_map = np_map(teacher, 2, "sum")[..., None]
    resized = tf.image.resize(t_map, (6, 5), method="bilinear").numpy()[..., 0]
    expected = np.mean((np_normalize(np_map(S, 2, "sum")) - np_normalize(resized)) ** 2)
    np.testing.assert_allclose(float(keras_at.at_loss(S, teacher)), expected, rtol=1e-5)


def test_at_loss_bounds_scale_invariance_and_zero_for_same_attention():
    value = float(keras_at.at_loss(S, T))
    assert 0 < value <= 2 / (6 * 5)
    np.testing.assert_allclose(float(keras_at.at_loss(S * 7.0, T * 0.01)), value, rtol=1e-4)
    assert float(keras_at.at_loss(S, -S)) == pytest.approx(0.0, abs=1e-9)


def test_kd_loss_matches_numpy_and_vanishes_for_equal_logits():
    rng = np.random.default_rng(3)
    s = rng.normal(size=(8, 10)).astype("float32")
    t = rng.normal(size=(8, 10)).astype("float32")
    for temperature in (1.0, 4.0):
        got = float(keras_at.kd_loss(s, t, temperature=temperature))
        np.testing.assert_allclose(got, np_kd(s, t, temperature), rtol=1e-5)
    assert float(keras_at.kd_loss(s, s)) == pytest.approx(0.0, abs=1e-6)


def test_hint_loss_normalises_and_requires_equal_channels():
    rng = np.random.default_rng(4)
    teacher = rng.normal(size=(3, 6, 5, 7)).astype("float32")
    expected = np.mean((np_normalize(S) - np_normalize(teacher)) ** 2)
    np.testing.assert_allclose(float(hint_loss(S, teacher)), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="channel"):
        hint_loss(S, T)


def test_input_gradient_distance_is_half_batch_mean_of_squared_norms():
    rng = np.random.default_rng(5)
    a, b = S, rng.normal(size=S.shape).astype("float32")
    expected = 0.5 * np.mean(np.sum((a - b).reshape(3, -1) ** 2, axis=1))
    np.testing.assert_allclose(float(input_gradient_distance(a, b)), expected, rtol=1e-5)
    np.testing.assert_allclose(
        float(input_gradient_distance(a)), 0.5 * np.mean(np.sum(a.reshape(3, -1) ** 2, 1)),
        rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"p": 0}, "p"), ({"p": -1}, "p"), ({"reduction": "median"}, "reduction")],
)
def test_bad_attention_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_at.attention_map(S, **kwargs)


def test_attention_map_rejects_non_4d_features():
    with pytest.raises(ValueError, match="rank 4"):
        keras_at.attention_map(np.ones((2, 3, 4), "float32"))


def test_kd_loss_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        keras_at.kd_loss(S[:, 0, 0], S[:, 0, 0], temperature=0)
