"""The Distiller: a student trained with its task loss plus transfer terms from a teacher.

The loss is the README's formula, `keras_at.terms.total_loss`, of the terms
`keras_at.terms.compute_terms` computes; input gradients are `keras_at.gradient_at`'s.
Each step runs the teacher forward once, in inference mode and outside the gradient tape,
and the student forward once through one multi-output tap model. Input-gradient terms
(eq. 4 and 6, Drucker & LeCun) add an inner tape for the student's input gradient J_S
inside the outer tape for the weights (double backprop); when they are all off, no inner
tape is traced. The teacher's J_T (eq. 4) is a fixed function of the example: given with
the images as `((images, J_T), labels)` (`keras_at.data.teacher_gradients`), it is read instead of
computed, and gradient AT alone does not run the teacher at all.

The step (a batch unpacked, its terms, their total, the logs) is `keras_at.step`'s, written once
with `keras.ops`; the trainer of the Keras backend (`keras_at.trainers`: a tape on TensorFlow, a
stateless `jax.value_and_grad` on JAX) differentiates it. Every loss is the global mean over the
whole batch under `tf.distribute`. Sample weights (and `class_weight`, which Keras turns into
them) weigh every term per example as Keras weighs the task loss: `sum_b w_b * term_b / B`.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
from keras import ops

from keras_at import gradient_at as grad_at
from keras_at import hub, saving, taps, task
from keras_at.attention import check_attention_args
from keras_at.losses import check_kd_shapes, compared_maps
from keras_at.pairs import pair_name, resolve_pairs
from keras_at.settings import (
    TERMS,
    WEIGHTS,
    attention_property,
    check_weight,
    live_variables,
    pairs_property,
    temperature_property,
    weight_property,
)
from keras_at.terms import hint_adapters, switch_on
from keras_at.trainers import Trainer


@keras.saving.register_keras_serializable(package="keras_at")
class Distiller(Trainer, keras.Model):
    """Trains a student with attention transfer (and KD, hints, gradient AT) from a teacher.

    The teacher is frozen: it is never trained and always runs in inference
    mode, and its variables are not in the Distiller's `trainable_weights`;
    the user's teacher object is left as it was (its `trainable` flag is not
    touched, so `teacher.fit` still trains it). `fit`, `evaluate` and
    `predict` are the student's; the trained student is `distiller.student`,
    a plain `keras.Model`.

    Settings: the loss weights and `temperature` are live variables (a new
    value takes effect at the next step); assigning `p` or `reduction`
    retraces the step; `pairs` is fixed at construction. Sample weights weigh
    every term per example, `sum_b w_b * term_b / B`, as Keras's default
    reduction weighs the task loss.

    Args:
        student: built Keras model returning logits (functional, Sequential,
            or subclassed returning `{"logits": ..., name: feature_map}`); a keras-hub task
            reads the images its preprocessor makes (`keras_at.hub`).
        teacher: built Keras model returning logits, same input shape.
        pairs: `"auto"`, or a list of `(student_layer_name, teacher_layer_name)`, a layer
            inside a nested model named by its path `"backbone/layer"`; `[]` for no
            activation pairs.
        beta: weight of `sum(at_loss)` over pairs (1e3, the paper's). The default suits
            the authors' optimizer, SGD with momentum; with Adam use about 10:
            in `benchmarks/beta_grid.py`'s run (`docs/beta_grid.md`) Adam's student was a
            little better than alone with 10 and worse with 1e2 and 1e3
            (docs/distiller.md, "Choosing β").
        p: exponent of the attention mapping function (assigning it later retraces the step).
        reduction: `"sum"`, `"mean"` or `"max"` over channels (likewise).
        alpha: KD weight in `(1 - alpha) * task + alpha * kd_loss`, in [0, 1].
        temperature: KD softmax temperature, finite and > 0; a live variable like the weights.
        hint_beta: weight of F-ActT (full-activation l2 on the same pairs).
        grad_beta: weight of gradient-based AT, `0.5 * mean_b ||J_S - J_T||²`; the frozen
            teacher's J_T can be computed once instead
            (`keras_at.data.teacher_gradients.cached_gradient_dataset`).
        symmetry_beta: weight of eq. 6, `0.5 * mean_b ||J_S(x) - flip(J_S(flip x))||²`.
        input_grad_penalty: weight of `0.5 * mean_b ||J_S||²` (Drucker & LeCun).
        input_shape: `(H, W, C)`, needed only when both networks are subclassed, or both
            built for any image size `(None, None, C)` and paired by resolution; it also fixes
            the raw image size of a keras-hub task whose image converter resizes
            (`keras_at.hub`).
        symmetry_output_beta: weight of the symmetry norm's outputs term,
            `0.5 * mean_b ||s(x) - s(flip x)||²` on the student's logits (§3.2: "l2 losses
            on the obtained attentions and outputs"; eq. 6 is `symmetry_beta`). It shares
            the student's pass on flip(x) with eq. 6; alone, it adds a forward pass only.
        hint_weight_decay: coupled L2 decay of the F-ActT 1×1 adapters, as the student's
            `weight_decay=` (an `L2(hint_weight_decay / 2)` kernel penalty), added to the loss
            while `hint_beta` > 0.

    Example:

    ```python
    teacher = keras_at.models.wide_resnet(16, 2)   # trained beforehand
    student = keras_at.models.wide_resnet(16, 1)
    distiller = keras_at.Distiller(student, teacher, beta=1e3)
    distiller.compile(optimizer="sgd",
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    distiller.fit(train_ds, validation_data=test_ds, epochs=10)
    ```
    """

    beta = weight_property("beta")
    alpha = weight_property("alpha")
    hint_beta = weight_property("hint_beta")
    grad_beta = weight_property("grad_beta")
    symmetry_beta = weight_property("symmetry_beta")
    input_grad_penalty = weight_property("input_grad_penalty")
    symmetry_output_beta = weight_property("symmetry_output_beta")

    def __init__(
        self,
        student,
        teacher,
        pairs="auto",
        beta: float = 1e3,
        p: float = 2,
        reduction: str = "sum",
        alpha: float = 0.0,
        temperature: float = 4.0,
        hint_beta: float = 0.0,
        grad_beta: float = 0.0,
        symmetry_beta: float = 0.0,
        input_grad_penalty: float = 0.0,
        input_shape=None,
        symmetry_output_beta: float = 0.0,
        hint_weight_decay: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if student is teacher:
            raise ValueError(
                "`student` and `teacher` are the same object; the teacher must be a separate, "
                "frozen model."
            )
        self._p, self._reduction = check_attention_args(p, reduction), reduction
        self._given_input_shape = tuple(input_shape) if input_shape is not None else None
        self.hint_weight_decay = check_weight("hint_weight_decay", hint_weight_decay)

        # === Networks and taps ===
        # The teacher's `trainable` flag is the user's: the Distiller freezes it by never
        # differentiating its variables and by leaving them out of `trainable_weights`.
        self.student, self.teacher = student, teacher
        # A keras-hub task's preprocessor runs in the step, on its network's side (keras_at.hub).
        student_net = hub.with_preprocessor(student, "student", self._given_input_shape)
        teacher_net = hub.with_preprocessor(teacher, "teacher", self._given_input_shape)
        shape = taps.common_input_shape(student_net, teacher_net, self._given_input_shape)
        student_graph = taps.graph_model(student_net, "student", shape)
        teacher_graph = taps.graph_model(teacher_net, "teacher", shape)
        # A tuple: fixed (the taps, adapters and saved weights depend on it), and left alone by
        # Keras's attribute tracking.
        self._pairs = tuple(resolve_pairs(pairs, student_graph, teacher_graph))
        # Held outside Keras's tracking: the taps share the networks' layers.
        self._taps = _Taps(
            taps.build_tap(student_graph, [s for s, _ in self.pairs], "student"),
            taps.build_tap(teacher_graph, [t for _, t in self.pairs], "teacher"),
        )
        self.hint_adapters = hint_adapters(
            self.pairs, self._taps.student, self._taps.teacher, self.hint_weight_decay
        )

        # === Loss weights and trackers ===
        self._loss_weights, self._temperature, self.schedule_marks = live_variables(
            (beta, alpha, hint_beta, grad_beta, symmetry_beta, input_grad_penalty,
             symmetry_output_beta), temperature,
        )
        self._active = set()  # the history keys of the terms the step computes
        for name in WEIGHTS:
            switch_on(self._active, name, getattr(self, name), bool(self.pairs))
        self._check_kd_classes(self.alpha)
        self.task_loss_tracker = keras.metrics.Mean(name="task_loss")
        self.term_trackers = [keras.metrics.Mean(name=term) for term in TERMS.values()]
        self._task_loss_fn = None
        self.built = True

    # === Construction helpers ===
    def _check_kd_classes(self, alpha):
        """KD compares softmax distributions over the last axis of the two networks' outputs:
        refused where it would mean nothing (`keras_at.losses.check_kd_shapes`)."""
        if alpha:
            check_kd_shapes(self._taps.student.outputs[0].shape,
                            self._taps.teacher.outputs[0].shape, f"KD (alpha={alpha})")

    def _retrace(self):
        """Traces the compiled steps again at their next call (a value they read changed)."""
        if self.train_function is not None:
            self.make_train_function(force=True)
        if self.test_function is not None:
            self.make_test_function(force=True)

    def _set_loss_weight(self, name, value):
        value = check_weight(name, value)
        if name == "alpha":
            self._check_kd_classes(value)
        self._loss_weights[name].assign(value)
        if switch_on(self._active, name, value, bool(self.pairs)):
            # A term that was off is not in the traced step: trace it again, once.
            self._retrace()

    # === Settings ===
    temperature = temperature_property()
    p = attention_property(
        "p", "Exponent of the attention mapping; assigning it retraces the step (p=2 stays fast)."
    )
    reduction = attention_property(
        "reduction", '`"sum"`, `"mean"` or `"max"` over channels; assigning it retraces the step.'
    )

    pairs = pairs_property()

    # === The frozen teacher ===
    def _without_teacher(self, variables):
        teacher = {id(v) for v in self.teacher.variables}
        return [v for v in variables if id(v) not in teacher]

    @property
    def trainable_weights(self):
        """The student's and hint adapters' trainable weights; never the teacher's."""
        return self._without_teacher(super().trainable_weights)

    @property
    def trainable_variables(self):
        return self._without_teacher(super().trainable_variables)

    @property
    def non_trainable_weights(self):
        trainable = {id(v) for v in self.trainable_weights}
        return [v for v in self.weights if id(v) not in trainable]

    @property
    def non_trainable_variables(self):
        trainable = {id(v) for v in self.trainable_variables}
        return [v for v in self.variables if id(v) not in trainable]

    # === Keras API ===
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """As `keras.Model.compile`; `loss` is the student's task loss (`keras_at.task.get`).

        Anything `keras.Model.compile` takes for one output: a name (Keras's meaning:
        `"sparse_categorical_crossentropy"` is `from_logits=False`), a function
        `(y_true, y_pred)` or a `keras.losses.Loss`; None is
        `SparseCategoricalCrossentropy(from_logits=True)`. Labels are checked only for a loss
        that reads class indices (`keras_at.batch_checks.check_class_indices`).
        """
        if kwargs.get("loss_weights") is not None:
            raise ValueError(
                "Distiller.compile: `loss_weights` is not read; the task loss is weighted by "
                "`1 - alpha` (KD) and each transfer term by its own weight (`beta`, ...)."
            )
        self._task_loss_fn = task.get(loss)
        self._optimizer_variables = None  # recorded at the next fit (`_refuse_changed_variables`)
        task.warn_if_probability_loss_on_logits(
            self._task_loss_fn, self._taps.student.outputs[0], self.student.name
        )
        super().compile(optimizer=optimizer, loss=loss if loss is not None else
                        self._task_loss_fn, metrics=metrics, **kwargs)

    def call(self, inputs, training=None):
        if isinstance(inputs, (list, tuple)) and len(inputs) == 2:
            inputs = inputs[0]  # (images, teacher_gradients): the student reads the images
        return grad_at.forward(self._taps.student, inputs, training)[0]

    @property
    def metrics(self):
        inactive = set(TERMS.values()) - self._active
        return [m for m in super().metrics if m.name not in inactive]

    @property
    def active_terms(self) -> list[str]:
        """History keys of the transfer terms this step computes."""
        return [term for term in TERMS.values() if term in self._active]

    # === Inspection ===
    def attention_maps(self, x) -> dict:
        """`{pair_name: (student_map, teacher_map)}`: normalised `(B, H, W)` numpy maps.

        The same maps the loss compares: the teacher's is resized to the
        student's size, and each example's map has unit l2 norm.
        """
        x = ops.convert_to_tensor(x, dtype="float32")
        _, s_features = grad_at.forward(self._taps.student, x, training=False)
        _, t_features = grad_at.forward(self._taps.teacher, x, training=False)
        maps = {}
        for (s_name, t_name), s, t in zip(self.pairs, s_features, t_features):
            shape = (-1, *s.shape[1:3])
            maps[pair_name(s_name, t_name)] = tuple(
                ops.convert_to_numpy(ops.reshape(q, shape))
                for q in compared_maps(s, t, self.p, self.reduction)
            )
        return maps

    # === Gradient AT: the teacher's J_T, computed once (keras_at.gradient_at) ===
    def teacher_input_gradients(self, x, y, batch_size: int = 128) -> np.ndarray:
        """The teacher's input gradient J_T of every example, as the training step computes it.

        `keras_at.gradient_at.teacher_input_gradients` with this Distiller's teacher and
        compiled loss: d/dx of the teacher's summed per-example task loss, in inference mode.
        Given back as `((x, J_T), y)`, the step reads it instead of running the teacher's
        forward and backward pass. Returns float32 `(N, H, W, C)` (N·H·W·C·4 bytes); the result
        does not depend on `batch_size`, the examples per teacher pass.

        Example:

        ```python
        gradients = distiller.teacher_input_gradients(x_train, y_train)
        distiller.fit((x_train, gradients), y_train, batch_size=128, epochs=10)
        ```
        """
        return grad_at.teacher_input_gradients(
            x, y, self._task_loss_fn, self._teacher_gradient_function(), batch_size
        )

    def _teacher_gradient_function(self):
        """J_T of a batch, compiled (`keras_at.backend.compiled`) once per compiled task loss,
        not per call."""
        loss = self._task_loss_fn
        cached = getattr(self, "_teacher_gradient_cache", None)
        if cached is None or cached[0] is not loss:
            # A tuple: Keras's attribute tracking leaves it alone (it wraps lists and dicts).
            self._teacher_gradient_cache = (loss, grad_at.teacher_gradient_function(
                self._taps.teacher, self._taps.student, loss, self.student.name))
        return self._teacher_gradient_cache[1]

    def cached_gradient_dataset(self, x, y, batch_size: int = 128, flip: bool = True,
                                shuffle: bool = True, seed=None):
        """Deprecated: use `keras_at.data.teacher_gradients.cached_gradient_dataset(distiller,
        x, y, ...)`, which this calls; the data package calls the Distiller, not the reverse."""
        warnings.warn(
            "Distiller.cached_gradient_dataset(x, y, ...) is deprecated and will be removed in "
            "the next release: use keras_at.data.teacher_gradients.cached_gradient_dataset("
            "distiller, x, y, ...).",
            DeprecationWarning,
            stacklevel=2,
        )
        # Imported here, and only for this deprecated alias: the Distiller's module imports
        # nothing from keras_at.data.
        from keras_at.data.teacher_gradients import cached_gradient_dataset

        return cached_gradient_dataset(self, x, y, batch_size, flip, shuffle, seed)

    # === Saving ===
    def save(self, filepath, overwrite: bool = False, **kwargs):
        """As `keras.Model.save`, but atomic (a temporary file renamed over the target), and an
        existing file is kept unless `overwrite=True`; `.keras` only (not legacy `.h5`)."""
        saving.refuse_legacy_h5(filepath)
        saving.save_atomically(super().save, filepath, overwrite, **kwargs)

    def save_weights(self, filepath, overwrite: bool = False, **kwargs):
        """As `keras.Model.save_weights`, atomic and never overwriting unless `overwrite=True`."""
        saving.save_atomically(super().save_weights, filepath, overwrite, **kwargs)

    def load_weights(self, filepath, *args, **kwargs):
        """As `keras.Model.load_weights`; a term the loaded weights switch on is computed, and
        networks of other shapes than the saved ones are named by their first such layer."""
        try:
            super().load_weights(filepath, *args, **kwargs)
        except ValueError as error:
            saving.explain_load_failure(self, filepath, error)
            raise
        for name in WEIGHTS:
            if TERMS[name] not in self._active and getattr(self, name) != 0:
                self._set_loss_weight(name, getattr(self, name))

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[saving.PAIRS_KEY] = saving.pairs_record(self.pairs, self.hint_adapters)

    def load_own_variables(self, store):
        # The live variables added after 0.1.0, in this order: files saved before them load.
        optional = [self._loss_weights["symmetry_output_beta"], self._temperature,
                    self.schedule_marks]
        saving.load_distiller_variables(self, store, optional)

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.optimizer is not None:
            self.optimizer.build(self._collect_trained_variables())

    # === Config ===
    def get_config(self):
        shape = self._given_input_shape
        return saving.distiller_config(
            self, super().get_config(), WEIGHTS, input_shape=list(shape) if shape else None
        )

    @classmethod
    def from_config(cls, config):
        return cls(**saving.networks_deserialized(config))


class _Taps:
    """Plain holder, so Keras does not track the tap models as extra sub-layers."""

    def __init__(self, student, teacher):
        self.student = student
        self.teacher = teacher
