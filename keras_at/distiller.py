"""The Distiller: a student trained with its task loss plus transfer terms from a teacher.

    loss = (1 - alpha) * task + alpha * kd
           + beta * sum_pairs at_loss + hint_beta * sum_pairs hint_loss
           + grad_beta * grad_at_loss + symmetry_beta * symmetry_loss
           + input_grad_penalty * input_grad_loss
           + symmetry_output_beta * symmetry_output_loss
           + the student's own regularisation losses

Each step runs the teacher forward once, in inference mode and outside the
gradient tape, and the student forward once through one multi-output tap
model. Input-gradient terms (eq. 4 and 6, Drucker & LeCun) add an inner
tape for the student's input gradient J_S inside the outer tape for the
weights (double backprop); when they are all off, no inner tape is traced.
The teacher's J_T (eq. 4) is a fixed function of the example: given with the
images as `((images, J_T), labels)` (`cached_gradient_dataset`), it is read
instead of computed, and gradient AT alone does not run the teacher at all.

Every loss is the global mean over the whole batch under `tf.distribute`:
terms are computed as per-replica means, logged with the replica's batch
size as weight, and divided by the replica count for gradient summation.
Sample weights (and `class_weight`, which Keras turns into them) weigh every
term per example as Keras weighs the task loss: `sum_b w_b * term_b / B`.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from keras_at import features as feat
from keras_at import saving
from keras_at._multi_worker import MultiWorkerSupport
from keras_at.attention import check_attention_args, normalized_attention
from keras_at.checks import (
    check_batch,
    per_example_weights,
    refuse_empty,
    split_teacher_gradients,
)
from keras_at.gradient_cache import TeacherGradientCache, step_gradients
from keras_at.losses import (
    at_loss_per_example,
    hint_loss_per_example,
    input_gradient_distance_per_example,
    kd_loss_per_example,
    symmetry_output_loss_per_example,
    weighted_mean,
)
from keras_at.pairs import pair_name, resolve_pairs
from keras_at.weights import (
    GRADIENT_WEIGHTS,
    PAIR_WEIGHTS,
    TERMS,
    WEIGHTS,
    check_temperature,
    check_weight,
    weight_property,
)


def _replicas() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync


@keras.saving.register_keras_serializable(package="keras_at")
class Distiller(MultiWorkerSupport, TeacherGradientCache, keras.Model):
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
            or subclassed returning `{"logits": ..., name: feature_map}`).
        teacher: built Keras model returning logits, same input shape.
        pairs: `"auto"`, or a list of `(student_layer_name, teacher_layer_name)`;
            `[]` for no activation pairs.
        beta: weight of `sum(at_loss)` over pairs (1e3 as in the paper's code). The
            default suits the paper's optimizer, SGD with momentum; with Adam use about 10:
            in `benchmarks/beta_grid.py`'s run (`docs/beta_grid.md`) Adam's student was a
            little better than alone with 10 and worse with 1e2 and 1e3 (README, "Choosing β").
        p: exponent of the attention mapping function (assigning it later retraces the step).
        reduction: `"sum"`, `"mean"` or `"max"` over channels (likewise).
        alpha: KD weight in `(1 - alpha) * task + alpha * kd_loss`, in [0, 1].
        temperature: KD softmax temperature, finite and > 0; a live variable like the weights.
        hint_beta: weight of F-ActT (full-activation l2 on the same pairs).
        grad_beta: weight of gradient-based AT, `0.5 * mean_b ||J_S - J_T||²`; the frozen
            teacher's J_T can be computed once instead (`cached_gradient_dataset`).
        symmetry_beta: weight of eq. 6, `0.5 * mean_b ||J_S(x) - flip(J_S(flip x))||²`.
        input_grad_penalty: weight of `0.5 * mean_b ||J_S||²` (Drucker & LeCun).
        input_shape: `(H, W, C)`, needed only when both networks are subclassed.
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
        check_attention_args(p, reduction)
        temperature = check_temperature(temperature)
        self._p, self._reduction = p, reduction
        self._given_input_shape = tuple(input_shape) if input_shape is not None else None
        self.hint_weight_decay = check_weight("hint_weight_decay", hint_weight_decay)

        # === Networks and taps ===
        # The teacher's `trainable` flag is the user's: the Distiller freezes it by never
        # differentiating its variables and by leaving them out of `trainable_weights`.
        self.student, self.teacher = student, teacher
        shape = feat.common_input_shape(student, teacher, self._given_input_shape)
        student_graph = feat.graph_model(student, "student", shape)
        teacher_graph = feat.graph_model(teacher, "teacher", shape)
        # A tuple: fixed (the taps, adapters and saved weights depend on it), and left alone by
        # Keras's attribute tracking.
        self._pairs = tuple(resolve_pairs(pairs, student_graph, teacher_graph))
        # Held outside Keras's tracking: the taps share the networks' layers.
        self._taps = _Taps(
            feat.build_tap(student_graph, [s for s, _ in self.pairs], "student"),
            feat.build_tap(teacher_graph, [t for _, t in self.pairs], "teacher"),
        )
        self.hint_adapters = self._build_adapters()

        # === Loss weights and trackers ===
        self._loss_weights = {}
        self._active = set()
        for name, value in zip(WEIGHTS, (beta, alpha, hint_beta, grad_beta, symmetry_beta,
                                         input_grad_penalty, symmetry_output_beta)):
            self._loss_weights[name] = keras.Variable(
                check_weight(name, value), trainable=False, dtype="float32", name=name
            )
            self._activate(name, value)
        self._check_kd_classes(self.alpha)
        self._temperature = keras.Variable(
            temperature, trainable=False, dtype="float32", name="temperature"
        )
        # Per weight, (epoch, value) a schedule callback last set (-1: none): saved with the
        # weights, so a run resumed mid-epoch does not apply that epoch's schedule twice.
        self.schedule_marks = keras.Variable(
            [[-1.0, 0.0]] * len(WEIGHTS), trainable=False, dtype="float32", name="schedule_marks"
        )
        self.task_loss_tracker = keras.metrics.Mean(name="task_loss")
        self.term_trackers = [keras.metrics.Mean(name=term) for term in TERMS.values()]
        self._task_loss_fn = None
        self.built = True

    # === Construction helpers ===
    def _build_adapters(self):
        """1×1 convolutions mapping student channels to teacher channels, per pair (F-ActT)."""
        adapters = []
        _, *s_feats = self._taps.student.outputs
        _, *t_feats = self._taps.teacher.outputs
        for (s_name, _), s_f, t_f in zip(self.pairs, s_feats, t_feats):
            if s_f.shape[-1] == t_f.shape[-1]:
                adapters.append(None)
                continue
            decay = self.hint_weight_decay
            conv = keras.layers.Conv2D(
                t_f.shape[-1], 1, use_bias=False, kernel_initializer="he_normal",
                kernel_regularizer=keras.regularizers.L2(decay / 2) if decay else None,
                name=f"hint_adapter_{s_name}",
            )
            conv.build(s_f.shape)
            adapters.append(conv)
        return adapters

    def _activate(self, name, value):
        """Marks a term as computed by the step; returns True if it was not before."""
        needs_pairs = name in PAIR_WEIGHTS
        if value == 0 or name in self._active or (needs_pairs and not self.pairs):
            return False
        self._active.add(name)
        return True

    def _check_kd_classes(self, alpha):
        feat.check_class_counts(
            self._taps.student.outputs[0].shape[-1], self._taps.teacher.outputs[0].shape[-1],
            alpha,
        )

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
        if self._activate(name, value):
            # A term that was off is not in the traced step: trace it again, once.
            self._retrace()

    # === Settings ===
    @property
    def temperature(self) -> float:
        """KD temperature, a live variable: a new value takes effect at the next step."""
        return float(ops.convert_to_numpy(self._temperature))

    @temperature.setter
    def temperature(self, value):
        self._temperature.assign(check_temperature(value))

    @property
    def p(self):
        """Exponent of the attention mapping; assigning it retraces the step (p=2 stays fast)."""
        return self._p

    @p.setter
    def p(self, value):
        check_attention_args(value, self._reduction)
        if value != self._p:
            self._p = value
            self._retrace()

    @property
    def reduction(self) -> str:
        """`"sum"`, `"mean"` or `"max"` over channels; assigning it retraces the step."""
        return self._reduction

    @reduction.setter
    def reduction(self, value):
        check_attention_args(self._p, value)
        if value != self._reduction:
            self._reduction = value
            self._retrace()

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The `(student_layer_name, teacher_layer_name)` pairs, fixed at construction."""
        return list(self._pairs)

    @pairs.setter
    def pairs(self, value):
        raise AttributeError(
            "`pairs` is fixed at construction: the feature taps, hint adapters and saved weights "
            "are built for it. Build a new keras_at.Distiller(student, teacher, pairs=[...]); "
            "the student and teacher keep their weights."
        )

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
        """As `keras.Model.compile`; `loss` is the student's task loss (default: sparse CE)."""
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        fn = keras.losses.get(loss) if isinstance(loss, str) else loss
        if not isinstance(fn, keras.losses.Loss):
            fn = keras.losses.LossFunctionWrapper(fn)
        self._task_loss_fn = fn
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def call(self, inputs, training=None):
        if isinstance(inputs, (list, tuple)) and len(inputs) == 2:
            inputs = inputs[0]  # (images, teacher_gradients): the student reads the images
        outputs = self._taps.student(inputs, training=training)
        return outputs[0] if isinstance(outputs, (list, tuple)) else outputs

    @property
    def metrics(self):
        inactive = {TERMS[w] for w in WEIGHTS if w not in self._active}
        return [m for m in super().metrics if m.name not in inactive]

    @property
    def active_terms(self) -> list[str]:
        """History keys of the transfer terms this step computes."""
        return [TERMS[w] for w in WEIGHTS if w in self._active]

    # === The step ===
    def _task_loss(self, y, logits, sample_weight):
        if self._task_loss_fn is None:
            raise ValueError("Call `distiller.compile(...)` before training or evaluating.")
        # Keras losses divide by the replica count; terms here are per-replica means.
        value = self._task_loss_fn(y, ops.cast(logits, "float32"), sample_weight)
        return value * _replicas()

    def _run(self, tap, x, y, sample_weight, training, gradients, flip=False):
        """Forward (and input gradient when `gradients`) of one tap: logits, features, task, J.

        J is each example's own input gradient, unweighted: sample weights weigh the terms
        built from it, as they weigh every other term.
        """
        if flip:
            x = ops.flip(x, axis=2)
        if not gradients:
            outputs = tap(x, training=training)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            return outputs[0], outputs[1:], None, None
        with tf.GradientTape(watch_accessed_variables=False) as inner:
            inner.watch(x)
            outputs = tap(x, training=training)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            task = self._task_loss(y, outputs[0], None)
            # The gradient of the summed per-example losses: J does not shrink with batch size.
            summed = task * ops.cast(ops.shape(x)[0], task.dtype)
        jacobian = inner.gradient(summed, x)
        if flip:
            jacobian = ops.flip(jacobian, axis=2)
        if sample_weight is not None:
            task = self._task_loss(y, outputs[0], sample_weight)
        return outputs[0], outputs[1:], task, jacobian

    def _teacher_outputs(self, x, y, cached=None):
        """Teacher logits, features and J_T; with `cached` J_T, a forward pass only if needed."""
        active = self._active
        fresh = "grad_beta" in active and cached is None
        logits, features, jacobian = None, [], None
        if fresh or active & {"beta", "alpha", "hint_beta"}:
            logits, features, _, jacobian = self._run(
                self._taps.teacher, x, y, None, training=False, gradients=fresh
            )
            logits, features = tf.stop_gradient(logits), [tf.stop_gradient(f) for f in features]
        if cached is not None:
            jacobian = step_gradients(cached, self._task_loss_fn)
        return logits, features, None if jacobian is None else tf.stop_gradient(jacobian)

    def _compute_terms(self, x, y, sample_weight, training, cached=None):
        """All terms of the total loss, as a dict {history key: per-replica weighted mean}."""
        active = self._active
        weights = per_example_weights(sample_weight)
        t_logits, t_features, t_jacobian = self._teacher_outputs(x, y, cached)
        needs_gradient = bool(active & set(GRADIENT_WEIGHTS))
        logits, s_features, task, jacobian = self._run(
            self._taps.student, x, y, sample_weight, training, needs_gradient
        )
        if task is None:
            task = self._task_loss(y, logits, sample_weight)
        terms = {"task_loss": task}
        per_example = {}
        if "beta" in active:
            per_example["at_loss"] = sum(
                at_loss_per_example(s, t, p=self.p, reduction=self.reduction)
                for s, t in zip(s_features, t_features)
            )
        if "hint_beta" in active:
            per_example["hint_loss"] = sum(
                hint_loss_per_example(a(s) if a is not None else s, t)
                for a, s, t in zip(self.hint_adapters, s_features, t_features)
            )
        if "alpha" in active:
            per_example["kd_loss"] = kd_loss_per_example(logits, t_logits, self._temperature)
        if "grad_beta" in active:
            per_example["grad_at_loss"] = input_gradient_distance_per_example(
                jacobian, t_jacobian
            )
        flipped_logits = None
        if "symmetry_beta" in active:
            flipped_logits, _, _, flipped = self._run(
                self._taps.student, x, y, None, training, True, True
            )
            per_example["symmetry_loss"] = input_gradient_distance_per_example(jacobian, flipped)
        if "input_grad_penalty" in active:
            per_example["input_grad_loss"] = input_gradient_distance_per_example(jacobian)
        if "symmetry_output_beta" in active:
            if flipped_logits is None:  # eq. 6 off: a forward pass on flip(x), no inner tape
                flipped_logits, *_ = self._run(
                    self._taps.student, x, y, None, training, False, True
                )
            per_example["symmetry_output_loss"] = symmetry_output_loss_per_example(
                logits, flipped_logits
            )
        for name, values in per_example.items():
            terms[name] = weighted_mean(values, weights)
        return logits, terms

    def _total(self, terms):
        w = self._loss_weights
        total = terms["task_loss"]
        if "kd_loss" in terms:
            total = (1.0 - w["alpha"]) * total + w["alpha"] * terms["kd_loss"]
        for name in WEIGHTS:
            if name != "alpha" and TERMS[name] in terms:
                total = total + w[name] * terms[TERMS[name]]
        regularization = self.student.losses
        if regularization:
            total = total + ops.sum([ops.cast(r, "float32") for r in regularization])
        adapter_decay = [r for a in self.hint_adapters if a is not None for r in a.losses]
        if adapter_decay and "hint_loss" in terms:  # the adapters' decay, while they are used
            decay = ops.sum([ops.cast(r, "float32") for r in adapter_decay])
            total = total + ops.where(w["hint_beta"] > 0, decay, 0.0)
        return total

    def _record(self, x, y, logits, sample_weight, terms, total):
        batch = ops.shape(x)[0]
        trackers = {m.name: m for m in self.metrics}
        trackers["loss"].update_state(total, sample_weight=batch)
        for name, value in terms.items():
            trackers[name].update_state(value, sample_weight=batch)
        return self.compute_metrics(x, y, logits, sample_weight=sample_weight)

    def _student_variables(self):
        """The student's weights and every hint adapter's, whether F-ActT is on or not.

        The optimizer is built once for this fixed list, so switching `hint_beta`
        on during training needs no new optimizer.
        """
        variables = list(self.student.trainable_variables)
        for adapter in self.hint_adapters:
            if adapter is not None:
                variables += adapter.trainable_variables
        return variables

    def _unpack(self, data):
        """`(images, labels, sample_weight, cached J_T or None)` of a batch, checked."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, cached = split_teacher_gradients(x, "grad_beta" in self._active)
        y = check_batch(x, y, self._taps.student, self.student.name)
        return x, y, sample_weight, cached

    def train_step(self, data):
        x, y, sample_weight, cached = self._unpack(data)
        variables = self._student_variables()
        with tf.GradientTape() as tape:
            logits, terms = self._compute_terms(x, y, sample_weight, training=True, cached=cached)
            total = self._total(terms)
            scaled = self.optimizer.scale_loss(total / _replicas())
        gradients = [
            ops.zeros_like(v) if g is None else g  # hint adapters while F-ActT is off
            for g, v in zip(tape.gradient(scaled, variables), variables)
        ]
        self.optimizer.apply(gradients, variables)
        return self._record(x, y, logits, sample_weight, terms, total)

    def test_step(self, data):
        x, y, sample_weight, cached = self._unpack(data)
        logits, terms = self._compute_terms(x, y, sample_weight, training=False, cached=cached)
        return self._record(x, y, logits, sample_weight, terms, self._total(terms))

    # === Inspection ===
    def attention_maps(self, x) -> dict:
        """`{pair_name: (student_map, teacher_map)}`: normalised `(B, H, W)` numpy maps.

        The same maps the loss compares: the teacher's is resized to the
        student's size, and each example's map has unit l2 norm.
        """
        x = ops.convert_to_tensor(x, dtype="float32")
        s_out = self._taps.student(x, training=False)
        t_out = self._taps.teacher(x, training=False)
        s_out = s_out if isinstance(s_out, (list, tuple)) else [s_out]
        t_out = t_out if isinstance(t_out, (list, tuple)) else [t_out]
        maps = {}
        for (s_name, t_name), s, t in zip(self.pairs, s_out[1:], t_out[1:]):
            size = tuple(s.shape[1:3])
            shape = (-1, *size)
            q_s = normalized_attention(s, self.p, self.reduction)
            q_t = normalized_attention(t, self.p, self.reduction, size=size)
            maps[pair_name(s_name, t_name)] = (
                ops.convert_to_numpy(ops.reshape(q_s, shape)),
                ops.convert_to_numpy(ops.reshape(q_t, shape)),
            )
        return maps

    def fit(self, x=None, y=None, *args, **kwargs):
        """As `keras.Model.fit`; empty training data is an error instead of a silent no-op."""
        refuse_empty(x)
        history = super().fit(x, y, *args, **kwargs)
        if history.epoch and not history.history:
            raise ValueError("fit() read no batch: the training data is empty.")
        return history

    # === Saving ===
    def save(self, filepath, overwrite: bool = False, **kwargs):
        """As `keras.Model.save`, but atomic (a temporary file renamed over the target), and an
        existing file is kept unless `overwrite=True`."""
        saving.save_atomically(super().save, filepath, overwrite, **kwargs)

    def save_weights(self, filepath, overwrite: bool = False, **kwargs):
        """As `keras.Model.save_weights`, atomic and never overwriting unless `overwrite=True`."""
        saving.save_atomically(super().save_weights, filepath, overwrite, **kwargs)

    def load_weights(self, filepath, *args, **kwargs):
        """As `keras.Model.load_weights`; a term the loaded weights switch on is computed."""
        super().load_weights(filepath, *args, **kwargs)
        for name in WEIGHTS:
            if name not in self._active and getattr(self, name) != 0:
                self._set_loss_weight(name, getattr(self, name))

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[saving.PAIRS_KEY] = saving.pairs_record(self.pairs, self.hint_adapters)

    def load_own_variables(self, store):
        saving.check_saved_pairs(store, self.pairs, self.hint_adapters)
        # Added after 0.1.0, in this order: files saved before them still load.
        optional = [self._loss_weights["symmetry_output_beta"], self._temperature,
                    self.schedule_marks]
        saving.load_own_variables(self, store, optional=optional)

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.optimizer is not None:
            self.optimizer.build(self._student_variables())

    # === Config ===
    def get_config(self):
        config = super().get_config()
        config.update(
            student=keras.saving.serialize_keras_object(self.student),
            teacher=keras.saving.serialize_keras_object(self.teacher),
            pairs=[list(pair) for pair in self.pairs],
            p=self.p,
            reduction=self.reduction,
            temperature=self.temperature,
            input_shape=list(self._given_input_shape) if self._given_input_shape else None,
            hint_weight_decay=self.hint_weight_decay,
            **{name: getattr(self, name) for name in WEIGHTS},
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["student"] = keras.saving.deserialize_keras_object(config["student"])
        config["teacher"] = keras.saving.deserialize_keras_object(config["teacher"])
        return cls(**config)


class _Taps:
    """Plain holder, so Keras does not track the tap models as extra sub-layers."""

    def __init__(self, student, teacher):
        self.student = student
        self.teacher = teacher
