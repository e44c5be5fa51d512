"""The Distiller's step, shared by every backend: a batch unpacked, its terms, their total, logs.

As Keras's own trainers are built (`keras/src/trainers/trainer.py` holds the shared step,
`keras/src/backend/<name>/trainer.py` subclasses it), `DistillationStep` holds what the step
computes, written once with `keras.ops`, and `keras_at.trainers` derives one trainer per Keras
backend from it, which differentiates the total and runs Keras's loops (a `tf.GradientTape` and
`tf.distribute` on TensorFlow, a stateless `jax.value_and_grad` on JAX). A trainer calls the
methods below and overrides the two hooks of the loops; it calls no other trainer's code. The
loops (`fit`, `evaluate`, `predict`) refuse empty data, and a `fit` after the trainable
variables changed, instead of running without a batch or with a stale optimizer.

The terms are `keras_at.terms.compute_terms`'s and their sum `keras_at.terms.total_loss`, the
README's formula. Every loss is the global mean over the whole batch under `tf.distribute`:
terms are per-replica means, logged with the replica's batch size as weight (the trainer
divides the total by the replica count for the gradients' sum). Sample weights weigh every term
per example as Keras weighs the task loss, `sum_b w_b * term_b / B`.

What the step reads, the model it is a base of (`keras_at.Distiller`) sets at construction and
in `compile`: `student`, `hint_adapters`, `p`, `reduction`, `_taps` (the student's and the
teacher's tap models), `_active` (the history keys of the terms computed), `_loss_weights` and
`_temperature` (live variables, `keras_at.settings`), `_task_loss_fn` (`keras_at.task.get`).
"""

from __future__ import annotations

import keras
from keras import ops

from keras_at import gradient_at
from keras_at.batch_checks import check_batch, per_example_weights, refuse_empty
from keras_at.terms import compute_terms, regularization, total_loss


class DistillationStep:
    """The shared step of the Distiller's `train_step` and `test_step` (a base of each trainer)."""

    def _unpack_batch(self, data):
        """`(images, labels, sample_weight, cached J_T or None)` of a batch, checked."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, cached = gradient_at.split_teacher_gradients(x, "grad_at_loss" in self._active)
        y = check_batch(x, y, self._taps.student, self.student.name, self._task_loss_fn)
        return x, y, sample_weight, cached

    def _compute_terms(self, x, y, sample_weight, training, cached):
        """`(logits, {history key: value})` of the batch's active terms (`keras_at.terms`)."""
        return compute_terms(
            self._taps.student, self._taps.teacher, x, y, sample_weight, training,
            loss=self._task_loss_fn, active=self._active, p=self.p, reduction=self.reduction,
            temperature=self._temperature, hint_adapters=self.hint_adapters,
            weights=per_example_weights(sample_weight), cached=cached,
        )

    def _compute_total_loss(self, terms):
        """The README's formula (`keras_at.terms.total_loss`), regularisation included."""
        extra = regularization(self.student, self.hint_adapters,
                               self._loss_weights["hint_beta"], "hint_loss" in terms)
        return total_loss(terms, self._loss_weights, extra)

    def _update_metrics(self, x, y, logits, sample_weight, terms, total):
        """Records the total and each term in its tracker; returns the step's logs."""
        batch = ops.shape(x)[0]
        trackers = {m.name: m for m in self.metrics}
        trackers["loss"].update_state(total, sample_weight=batch)
        for name, value in terms.items():
            trackers[name].update_state(value, sample_weight=batch)
        return self.compute_metrics(x, y, logits, sample_weight=sample_weight)

    def _collect_trained_variables(self):
        """The student's weights and every hint adapter's, whether F-ActT is on or not.

        The optimizer is built once for this fixed list, so switching `hint_beta`
        on during training needs no new optimizer.
        """
        variables = list(self.student.trainable_variables)
        for adapter in self.hint_adapters:
            if adapter is not None:
                variables += adapter.trainable_variables
        return variables

    # === Keras's loops, refusing what they would run silently ===
    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        """As `keras.Model.fit`; empty training data is an error instead of a silent no-op, and
        so are empty validation data and a `trainable` set on the student after the optimizer
        was built (`_refuse_changed_variables`).

        Under `MultiWorkerMirroredStrategy` only the chief writes where a user looks
        (`_select_worker_callbacks`), and a `keras_at.data.load` dataset of image files (`x` or
        `validation_data`) is read by worker, each decoding only its own files
        (`_split_input_per_worker`); both on TensorFlow (`keras_at.trainers.tensorflow`).
        """
        refuse_empty(x)
        validation = kwargs.get("validation_data")
        refuse_empty(validation[0] if isinstance(validation, (tuple, list)) else validation,
                     data="validation data")
        self._refuse_changed_variables()
        callbacks = self._select_worker_callbacks(callbacks)
        x, kwargs = self._split_input_per_worker(x, kwargs)
        history = super().fit(x, y, *args, callbacks=callbacks, **kwargs)
        if history.epoch and not history.history:
            raise ValueError("fit() read no batch: the training data is empty.")
        return history

    def _refuse_changed_variables(self):
        """A `ValueError` when the trainable variables are not those the optimizer was built for.

        Keras builds the optimizer, and traces the step, for the trainable variables of the
        first fit after compile; setting `student.trainable` (or a layer's) after it, without
        compiling again, would go on training every weight on TensorFlow and fail inside the
        optimizer on JAX.
        """
        variables = tuple(id(v) for v in self.trainable_variables)
        recorded = getattr(self, "_optimizer_variables", None)
        if recorded is None or not self.optimizer.built:
            self._optimizer_variables = variables
        elif variables != recorded:
            raise ValueError(
                "The trainable variables (the student's and the hint adapters') changed since "
                f"the optimizer was built for them, {len(recorded)} then and {len(variables)} "
                "now: `trainable` was set on the student or its layers after a fit. Call "
                "distiller.compile(...) again, with a new optimizer, to train the new set."
            )

    def evaluate(self, x=None, *args, **kwargs):
        """As `keras.Model.evaluate` (a file dataset is read by worker, as in `fit`); empty data
        is an error, not an empty list."""
        refuse_empty(x, "evaluate", "data")
        x, kwargs = self._split_input_per_worker(x, kwargs)
        try:
            logs = super().evaluate(x, *args, **kwargs)
        except StopIteration as error:  # JAX: no first batch to build the step with
            raise ValueError("evaluate() read no batch: the data is empty.") from error
        if isinstance(logs, (list, dict)) and not logs:
            raise ValueError("evaluate() read no batch: the data is empty.")
        return logs

    def predict(self, x, *args, **kwargs):
        """As `keras.Model.predict` (a file dataset is read by worker, as in `fit`); empty data
        is an error."""
        refuse_empty(x, "predict", "data")
        x, kwargs = self._split_input_per_worker(x, kwargs)
        try:
            return super().predict(x, *args, **kwargs)
        except UnboundLocalError as error:  # Keras's predict, with no batch's outputs to join
            if "batch_outputs" not in str(error):
                raise
            raise ValueError("predict() read no batch: the data is empty.") from error

    # === Hooks of the loops, overridden by a trainer that needs them ===
    def _select_worker_callbacks(self, callbacks):
        """The callbacks this worker runs in `fit`: all of them (TensorFlow's multi-worker
        trainer keeps the other workers' files out of the user's way)."""
        return callbacks

    def _split_input_per_worker(self, x, kwargs):
        """`(x, fit_kwargs)` as this worker reads them: as given (TensorFlow's multi-worker
        trainer has each worker read its own files of a folder)."""
        return x, kwargs
