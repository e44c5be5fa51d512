"""BatchNorm: Keras's batch normalisation with Torch's statistics, fused on TensorFlow.

On TensorFlow, a training step runs one `FusedBatchNormV3` op and its gradient op, with a
closed-form second derivative (`_fused_batch_norm`). On JAX, the same normalisation is written
with `keras.ops` and JAX differentiates it to any order; XLA fuses its elementwise work.
"""

from __future__ import annotations

import keras
from keras import ops

_AXES = [0, 1, 2]


@keras.saving.register_keras_serializable(package="keras_at")
class BatchNorm(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with Torch's statistics, on TensorFlow's fused kernel.

    The normalisation is the same as Keras's (biased batch variance in training, the moving
    statistics in inference), computed by one `FusedBatchNormV3` op and its gradient op; the
    gradient of that gradient (double backprop) is written out in closed form. The moving
    variance is updated with the unbiased batch variance, as `torch.nn.BatchNorm2d` does.
    On JAX the same computation is written with `keras.ops` (JAX differentiates it to any
    order). Masks, renorm, synchronized statistics, an axis other than the last of a 4-D input,
    or another backend fall back to Keras's implementation.

    Args:
        **kwargs: as `keras.layers.BatchNormalization`.

    Example:

    ```python
    x = keras.Input((32, 32, 16))
    y = BatchNorm(momentum=0.9, epsilon=1e-5)(x)
    ```
    """

    def _own_path(self, inputs, mask) -> bool:
        return (
            keras.backend.backend() in ("tensorflow", "jax")
            and mask is None
            and not getattr(self, "renorm", False)  # Keras >= 3.14
            and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._own_path(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        if keras.backend.backend() == "tensorflow":
            from keras_at.models import _fused_batch_norm

            return _fused_batch_norm.call(self, inputs, training)
        x = ops.cast(inputs, "float32")
        gamma, beta = self._scale_and_offset(x.shape[-1])
        if training and self.trainable:
            mean = ops.mean(x, _AXES)
            variance = ops.mean(ops.square(x - mean), _AXES)  # biased: the normalisation's
            count = ops.size(x) // x.shape[-1]
            unbiased = variance * ops.cast(count, "float32") / ops.cast(count - 1, "float32")
            self._update_moving_statistics(mean, unbiased)
        else:
            mean = ops.cast(self.moving_mean, "float32")
            variance = ops.cast(self.moving_variance, "float32")
        y = (x - mean) * (gamma * ops.rsqrt(variance + self.epsilon)) + beta
        return ops.cast(y, self.compute_dtype)

    def _scale_and_offset(self, channels):
        """float32 (γ, β), ones and zeros where the layer has no scale or no centre."""
        gamma = ops.cast(self.gamma, "float32") if self.scale else ops.ones([channels])
        beta = ops.cast(self.beta, "float32") if self.center else ops.zeros([channels])
        return gamma, beta

    def _update_moving_statistics(self, mean, variance):
        """Exponential moving averages; `variance` is the unbiased batch variance (Torch's)."""
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
            moving.assign(moving * self.momentum + batch * (1.0 - self.momentum))
