"""The Distiller's trainer on TensorFlow: `tf.GradientTape`, `tf.function`, `tf.distribute`.

Every loss is the global mean under `tf.distribute`: the step's terms are per-replica means,
divided by the replica count for the gradients' sum over replicas (`train_step`). Under
`MultiWorkerMirroredStrategy`, `_multi_worker` works around keras-team/keras#20585 and keeps the
other workers' files out of the user's way.
"""

from __future__ import annotations

import tensorflow as tf
from keras import ops

from keras_at.backend import replicas
from keras_at.models.batch_norm import synchronize_moving_statistics
from keras_at.step import DistillationStep
from keras_at.trainers.tensorflow import _multi_worker


class TensorFlowTrainer(DistillationStep):
    """The Distiller's `train_step` and `test_step` on TensorFlow (a base before keras.Model)."""

    def train_step(self, data):
        x, y, sample_weight, cached = self._unpack_batch(data)
        variables = self._collect_trained_variables()
        with tf.GradientTape() as tape:
            logits, terms = self._compute_terms(x, y, sample_weight, training=True, cached=cached)
            total = self._compute_total_loss(terms)
            scaled = self.optimizer.scale_loss(total / replicas())
        gradients = [
            ops.zeros_like(v) if g is None else g  # hint adapters while F-ActT is off
            for g, v in zip(tape.gradient(scaled, variables), variables)
        ]
        self.optimizer.apply(gradients, variables)
        return self._update_metrics(x, y, logits, sample_weight, terms, total)

    def test_step(self, data):
        x, y, sample_weight, cached = self._unpack_batch(data)
        logits, terms = self._compute_terms(x, y, sample_weight, training=False, cached=cached)
        return self._update_metrics(x, y, logits, sample_weight, terms,
                                    self._compute_total_loss(terms))

    # Each replica keeps its own BatchNorm statistics while it trains (no communication in the
    # step): they are made the same on every replica, their mean, before the replicas use them.
    def fit(self, *args, **kwargs):
        synchronize_moving_statistics(self)  # a teacher trained by plain `fit` under the strategy
        history = super().fit(*args, **kwargs)
        synchronize_moving_statistics(self)
        return history

    def evaluate(self, *args, **kwargs):  # fit's validation too
        synchronize_moving_statistics(self)
        return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        synchronize_moving_statistics(self)
        return super().predict(*args, **kwargs)

    def _select_worker_callbacks(self, callbacks):
        """Under `MultiWorkerMirroredStrategy`, only the chief writes where a user looks."""
        return _multi_worker.chief_only(callbacks, self.distribute_strategy)

    def _split_input_per_worker(self, x, kwargs):
        """Under `MultiWorkerMirroredStrategy`, each worker reads its own files of a folder."""
        return _multi_worker.per_worker_input(self, x, kwargs)

    # keras-team/keras#20585 under MultiWorkerMirroredStrategy (`_multi_worker`)
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        return _multi_worker.maybe_symbolic_build(self, super()._maybe_symbolic_build,
                                                  iterator, data_batch)

    def _make_function(self, step_function):
        return _multi_worker.make_function(self, super()._make_function, step_function)
