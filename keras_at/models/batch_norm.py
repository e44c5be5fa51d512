"""BatchNorm: Keras's batch normalisation with Torch's statistics, fused on TensorFlow.

On TensorFlow, a training step runs one `FusedBatchNormV3` op and its gradient op, with a
closed-form second derivative (`_fused_batch_norm`). On JAX, the same normalisation is written
with `keras.ops` and JAX differentiates it to any order; XLA fuses its elementwise work.

Under `tf.distribute`, the moving statistics are tf.keras 2's: each replica updates its own
copy from its own batches, with no communication in the step, and a read outside a replica
(saving, `get_weights`, a call outside `strategy.run`) is their mean over all replicas
(`synchronization="on_read"`, `aggregation="mean"`). `synchronize_moving_statistics` makes
every replica's copy that mean, so that the replicas also normalise alike in inference; the
Distiller calls it before and after `fit`, and before `evaluate` and `predict`.
"""

from __future__ import annotations

import keras
from keras import ops

_AXES = [0, 1, 2]
# Keras's names for its exponential moving averages (renorm's too: Keras computes those).
_MOVING_STATISTICS = ("moving_mean", "moving_variance", "moving_stddev", "renorm_mean",
                      "renorm_stddev")


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

    Under a `tf.distribute` strategy each replica keeps its own moving statistics while it
    trains, from its own share of each batch, and every read from outside the replicas (a
    saved model, `get_weights`) sees their mean; `synchronize_moving_statistics(model)` gives
    every replica that mean (the Distiller does so around `fit` and before `evaluate` and
    `predict`). The mean of the replicas' moving means is the moving mean of the global
    batches' means when the replicas' shares are the same size; the moving variance is the
    mean of the replicas' (unbiased) variances of their own shares.

    It takes the arguments of `keras.layers.BatchNormalization`.

    Example:

    ```python
    x = keras.Input((32, 32, 16))
    y = BatchNorm(momentum=0.9, epsilon=1e-5)(x)
    ```
    """

    def add_weight(self, *args, name=None, **kwargs):
        """Keras's, except that a moving statistic is each replica's own, read as their mean."""
        if name not in _MOVING_STATISTICS or args:
            return super().add_weight(*args, name=name, **kwargs)
        # Keras's add_weight has no `synchronization`: the variable is made as a Metric makes
        # its own, with the name, path and place among the weights that Keras gives it.
        with keras.name_scope(self.name, caller=self):
            variable = keras.Variable(
                initializer=keras.initializers.get(kwargs["initializer"]),
                shape=kwargs["shape"],
                dtype=kwargs.get("dtype") or self.variable_dtype,
                trainable=False,
                autocast=kwargs.get("autocast", True),
                aggregation="mean",
                synchronization="on_read",
                name=name,
            )
        self._track_variable(variable)
        return variable

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


def synchronize_moving_statistics(model) -> None:
    """Gives every replica the mean over the replicas of each moving statistic in `model`.

    Under a `tf.distribute` strategy, each replica updates its own copy of a `BatchNorm`'s
    moving statistics and uses it in inference inside `strategy.run` (in `evaluate` and
    `predict`), while saving and `get_weights` read their mean. This sets each copy to that
    mean, so every replica, and every worker, normalises with the same statistics, the ones
    saved. One reduction per statistic, across all workers: under
    `MultiWorkerMirroredStrategy` every worker must call it at the same point. Outside a
    strategy with several replicas (and on JAX) it does nothing. The Distiller calls it before
    and after `fit` and before `evaluate` and `predict`; after a plain `model.fit`, call it
    before `model.evaluate` or `model.predict` under the strategy.

    Args:
        model: a Keras model or layer; its `BatchNorm` layers at any depth are synchronised.

    Example:

    ```python
    with strategy.scope():
        model = keras_at.models.wide_resnet(16, 1)
        model.compile(...)
    model.fit(x, y)
    keras_at.models.synchronize_moving_statistics(model)
    model.evaluate(x_test, y_test)
    ```
    """
    for variable in model.weights:
        if variable.synchronization != "on_read" or variable.aggregation != "mean":
            continue
        strategy = getattr(variable.value, "distribute_strategy", None)  # tf.distribute's
        if strategy is None or strategy.num_replicas_in_sync == 1:
            continue
        with strategy.scope():
            # Read outside the replicas: their mean. Assigned there: every replica's copy.
            variable.assign(variable.value)
