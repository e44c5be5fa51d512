"""The models' BatchNorm: TensorFlow's fused kernel, Keras's normalisation, Torch's statistics.

Every expected value is computed here with NumPy from the batch itself.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_at.models import BatchNorm, nin, resnet, wide_resnet

EPS = 1e-5


def batch(shape=(8, 5, 5, 4), seed=0):
    return np.random.default_rng(seed).normal(2.0, 3.0, size=shape).astype("float32")


def layer(channels=4, **kwargs):
    bn = BatchNorm(momentum=0.9, epsilon=EPS, gamma_initializer="uniform",
                   beta_initializer="uniform", **kwargs)
    bn.build((None, 5, 5, channels))
    return bn


def numpy_bn(x, mean, var, gamma, beta):
    return (x - mean) / np.sqrt(var + EPS) * gamma + beta


def test_training_normalises_with_the_biased_batch_variance():
    x = batch()
    bn = layer()
    gamma, beta = bn.gamma.numpy(), bn.beta.numpy()
    flat = x.reshape(-1, 4)
    expected = numpy_bn(x, flat.mean(0), flat.var(0), gamma, beta)
    np.testing.assert_allclose(bn(x, training=True).numpy(), expected, atol=2e-5)


def test_moving_statistics_follow_torch_with_the_unbiased_variance():
    x = batch()
    bn = layer()
    bn(x, training=True)
    flat = x.reshape(-1, 4)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.9 + 0.1 * flat.var(0, ddof=1),
                               rtol=1e-5)


def test_inference_uses_the_moving_statistics():
    x = batch()
    bn = layer()
    mean, var = np.arange(4, dtype="float32"), np.linspace(0.5, 2.0, 4).astype("float32")
    bn.moving_mean.assign(mean)
    bn.moving_variance.assign(var)
    expected = numpy_bn(x, mean, var, bn.gamma.numpy(), bn.beta.numpy())
    np.testing.assert_allclose(bn(x, training=False).numpy(), expected, atol=2e-5)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), mean)  # inference updates nothing


def test_a_frozen_layer_runs_in_inference_even_when_training():
    x = batch()
    bn = layer()
    bn.trainable = False
    np.testing.assert_allclose(bn(x, training=True).numpy(), bn(x, training=False).numpy())
    np.testing.assert_array_equal(bn.moving_mean.numpy(), np.zeros(4))


def test_matches_keras_batch_normalization_outputs_and_gradients():
    x = tf.constant(batch())
    ours = layer()
    theirs = keras.layers.BatchNormalization(momentum=0.9, epsilon=EPS)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    results = []
    for bn in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = bn(x, training=True)
            loss = tf.reduce_sum(y ** 3)
        results.append((y, *tape.gradient(loss, [x, bn.gamma, bn.beta])))
    for a, b in zip(*results):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-3)


def explicit_batch_norm(x, gamma, beta):
    """Batch norm written out, with no stop_gradient anywhere (`tf.nn.moments` has one, which
    leaves a term out of the second derivative through Keras's own unfused layer)."""
    mean = tf.reduce_mean(x, [0, 1, 2])
    variance = tf.reduce_mean((x - mean) ** 2, [0, 1, 2])
    return (x - mean) / tf.sqrt(variance + EPS) * gamma + beta


@pytest.mark.parametrize("with_dgamma", [False, True])
def test_double_backprop_matches_float64_autodiff(with_dgamma):
    """The closed-form gradient of the gradient equals autodiff of batch norm in float64."""
    rng = np.random.default_rng(1)
    arrays = [rng.normal(2, 3, (6, 4, 5, 3)), rng.normal(2, 3, (6, 4, 5, 3)),
              rng.uniform(size=3), rng.uniform(size=3)]
    bn = layer(3)
    results = []
    for dtype, norm in (("float32", lambda x, g, b: bn(x, training=True)),
                        ("float64", explicit_batch_norm)):
        x, w, gamma, beta = (tf.constant(a, dtype) for a in arrays)
        if dtype == "float32":
            bn.gamma.assign(gamma)
            bn.beta.assign(beta)
            gamma, beta = bn.gamma.value, bn.beta.value
        with tf.GradientTape() as outer:
            outer.watch([x, gamma, beta])
            with tf.GradientTape() as inner:
                inner.watch([x, gamma])
                y = norm(x, gamma, beta)
                loss = tf.reduce_sum(w * y + 0.1 * y ** 3)
            j, dgamma = inner.gradient(loss, [x, gamma])
            # With `with_dgamma`, dγ is differentiated too: both cotangents are nonzero.
            penalty = tf.reduce_sum(j ** 2 * w)
            if with_dgamma:
                penalty += tf.reduce_sum(dgamma ** 2)
        results.append([g.numpy() for g in outer.gradient(penalty, [x, gamma, beta])])
    scale = max(np.abs(g).max() for g in results[1])
    for name, ours, exact in zip(("x", "gamma", "beta"), *results):
        np.testing.assert_allclose(ours, exact, rtol=1e-3, atol=1e-5 * scale, err_msg=name)


def test_second_order_gradients_reach_gamma_and_beta():
    x = tf.constant(batch())
    bn = layer()
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            inner.watch(x)
            loss = tf.reduce_sum(bn(x, training=True) ** 3)
        penalty = tf.reduce_sum(inner.gradient(loss, x) ** 2)
    grads = outer.gradient(penalty, bn.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_falls_back_to_keras_for_other_axes():
    x = batch((8, 4, 5, 5))
    bn = BatchNorm(axis=1, epsilon=EPS)
    bn.build(x.shape)
    per_channel = np.moveaxis(x, 1, -1).reshape(-1, 4)
    expected = (x - per_channel.mean(0)[:, None, None]) / np.sqrt(
        per_channel.var(0)[:, None, None] + EPS)
    np.testing.assert_allclose(bn(x, training=True).numpy(), expected, atol=2e-5)


def test_mixed_precision_keeps_the_compute_dtype():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        bn = BatchNorm()
        y = bn(tf.constant(batch(), dtype="bfloat16"), training=True)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert y.dtype == tf.bfloat16
    assert bn.moving_mean.dtype == "float32"


@pytest.mark.parametrize("build", [lambda: wide_resnet(10, 1, input_shape=(16, 16, 3)),
                                   lambda: nin("thin", input_shape=(16, 16, 3))])
def test_models_use_it_and_reload_it(build, tmp_path):
    model = build()
    assert any(isinstance(layer, BatchNorm) for layer in model.layers)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert any(isinstance(layer, BatchNorm) for layer in loaded.layers)
    x = batch((2, 16, 16, 3))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)


@pytest.mark.parametrize("library", ["keras_cv", "keras_hub"])
def test_resnet_batch_norms_are_fused_with_torch_statistics_when_fresh(library):
    model = resnet(18, 10, (64, 64, 3), backbone=library)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 1 + 2 * 8 + 3  # stem, two per block, three projections
    assert all(isinstance(n, BatchNorm) for n in norms)
    assert {(n.momentum, n.epsilon) for n in norms} == {(0.9, EPS)}


def test_resnet_keeps_a_passed_backbones_batch_norm_statistics():
    import keras_cv

    backbone = keras_cv.models.ResNetBackbone(
        stackwise_filters=[64, 128, 256, 512], stackwise_blocks=[2, 2, 2, 2],
        stackwise_strides=[1, 2, 2, 2], block_type="basic_block", include_rescaling=False,
        input_shape=(64, 64, 3))
    expected = {(n.momentum, n.epsilon) for n in backbone.layers
                if isinstance(n, keras.layers.BatchNormalization)}
    model = resnet(18, 10, (64, 64, 3), backbone=backbone)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(isinstance(n, BatchNorm) for n in norms)
    assert {(n.momentum, n.epsilon) for n in norms} == expected != {(0.9, EPS)}
