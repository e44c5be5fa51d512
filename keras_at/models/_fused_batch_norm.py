"""Batch norm on TensorFlow's fused kernel, with a closed-form second derivative (`BatchNorm`'s
TensorFlow path).

The fused op `FusedBatchNormV3` and its gradient op do in one kernel what Keras's batch norm
does in several elementwise ops. Double backprop (gradient-based AT, the input-gradient
penalty) differentiates that gradient op once more; TensorFlow's registered rule for it rebuilds
the batch-norm gradient from unfused ops and differentiates them, which is mostly elementwise
work. Here the derivative of the gradient is written out instead (`_second_order`), per channel
over the N = B·H·W positions, with x̂ = (x - mean) / σ, σ² = var + ε and
P(t) = t - mean(t) - x̂·mean(t·x̂):

    dx = γ/σ · P(dy),  dγ = Σ dy·x̂,  dβ = Σ dy,

and compiled with XLA, which fuses its dozen elementwise passes and reductions. Only the second
derivative is compiled; the rest of the step is not (XLA is slower for the convolutions on a
CPU). What it gains is measured by `benchmarks/throughput.py` (README, "Performance").
"""

from __future__ import annotations

import tensorflow as tf

_AXES = [0, 1, 2]


def _project(t, x_hat):
    """P(t): t without its per-channel mean and its per-channel component along x̂."""
    return t - tf.reduce_mean(t, _AXES) - x_hat * tf.reduce_mean(t * x_hat, _AXES)


@tf.function(jit_compile=True)
def _second_order(dy, x, gamma, epsilon, grad_dx, grad_dgamma, grad_dbeta):
    """Cotangents of (dy, x, γ) given those of (dx, dγ, dβ), in closed form.

    dx is linear in dy through the symmetric projection P, so the dy part is P applied to the
    incoming cotangent. The x part goes through x̂ and 1/σ: for F(x̂, 1/σ) with partials G and
    h, d/dx = (P(G) - h·x̂/(Nσ)) / σ, the batch-norm Jacobian.
    """
    mean, variance = tf.nn.moments(x, _AXES)
    inv = tf.math.rsqrt(variance + epsilon)
    x_hat = (x - mean) * inv
    zeros = tf.zeros_like(gamma)
    grad_dgamma = zeros if grad_dgamma is None else grad_dgamma
    grad_dbeta = zeros if grad_dbeta is None else grad_dbeta
    if grad_dx is None:
        grad_dx = tf.zeros_like(x)
    p_dy = _project(dy, x_hat)
    a_p_dy = tf.reduce_mean(grad_dx * p_dy, _AXES)  # mean(a·P(dy)), a = grad_dx
    grad_dy = gamma * inv * _project(grad_dx, x_hat) + grad_dgamma * x_hat + grad_dbeta
    count = tf.cast(tf.size(x) // tf.shape(x)[-1], x.dtype)
    grad_gamma = inv * a_p_dy * count
    g = (-gamma * inv * (grad_dx * tf.reduce_mean(dy * x_hat, _AXES)
                         + dy * tf.reduce_mean(grad_dx * x_hat, _AXES))
         + grad_dgamma * dy)
    grad_x = inv * (_project(g, x_hat) - gamma * inv * a_p_dy * x_hat)
    return grad_dy, grad_x, grad_gamma


def fused_batch_norm_training(x, gamma, beta, epsilon: float):
    """`(y, batch mean, unbiased batch variance)` of a 4-D channels-last float32 `x`.

    Gradients flow to x, γ and β through `y` (the statistics are for the moving averages);
    the gradient of the gradient is `_second_order`'s closed form.
    """
    empty = tf.zeros([0])

    @tf.custom_gradient
    def forward(x, gamma, beta):
        y, mean, variance, saved_mean, saved_var, reserve = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=epsilon,
            is_training=True,
        )

        @tf.custom_gradient
        def backward(dy, x, gamma):
            dx, dgamma, dbeta, _, _ = tf.raw_ops.FusedBatchNormGradV3(
                y_backprop=dy, x=x, scale=gamma, reserve_space_1=saved_mean,
                reserve_space_2=saved_var, reserve_space_3=reserve, epsilon=epsilon,
                is_training=True,
            )

            def second(grad_dx, grad_dgamma, grad_dbeta):
                return _second_order(dy, x, gamma, epsilon, grad_dx, grad_dgamma, grad_dbeta)

            return (dx, dgamma, dbeta), second

        def first(dy, *_statistics):
            return backward(dy, x, gamma)

        return (y, mean, variance), first

    return forward(x, gamma, beta)


def call(layer, inputs, training):
    """`BatchNorm.call` on TensorFlow: the fused kernel, in training or inference."""
    x = tf.cast(inputs, "float32")
    gamma, beta = layer._scale_and_offset(x.shape[-1])
    if training and layer.trainable:
        y, mean, variance = fused_batch_norm_training(x, gamma, beta, layer.epsilon)
        # `variance` is the unbiased batch variance (Bessel-corrected), Torch's choice.
        layer._update_moving_statistics(mean, variance)
    else:
        y, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=gamma, offset=beta,
            mean=tf.cast(layer.moving_mean, "float32"),
            variance=tf.cast(layer.moving_variance, "float32"),
            epsilon=layer.epsilon, is_training=False,
        )
    return tf.cast(y, layer.compute_dtype)
