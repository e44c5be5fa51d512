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
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from keras_at import features as feat
from keras_at._multi_worker import MultiWorkerSupport
from keras_at.attention import check_attention_args, normalized_attention
from keras_at.checks import check_batch, refuse_empty, refuse_overwrite, split_teacher_gradients
from keras_at.gradient_cache import TeacherGradientCache, step_gradients
from keras_at.losses import (
    at_loss,
    hint_loss,
    input_gradient_distance,
    kd_loss,
    symmetry_output_loss,
)
from keras_at.weights import (
    GRADIENT_WEIGHTS,
    PAIR_WEIGHTS,
    TERMS,
    WEIGHTS,
    check_weight,
    weight_property,
)


def _replicas() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync


@keras.saving.register_keras_serializable(package="keras_at")
class Distiller(MultiWorkerSupport, TeacherGradientCache, keras.Model):
    """Trains a student with attention transfer (and KD, hints, gradient AT) from a teacher.

    The teacher is frozen: it is never trained and always runs in inference
    mode. `fit`, `evaluate` and `predict` are the student's; the trained
    student is `distiller.student`, a plain `keras.Model`.

    Args:
        student: built Keras model returning logits (functional, Sequential,
            or subclassed returning `{"logits": ..., name: feature_map}`).
        teacher: built Keras model returning logits, same input shape.
        pairs: `"auto"`, or a list of `(student_layer_name, teacher_layer_name)`;
            `[]` for no activation pairs.
        beta: weight of `sum(at_loss)` over pairs (1e3 as in the paper's code).
        p: exponent of the attention mapping function.
        reduction: `"sum"`, `"mean"` or `"max"` over channels.
        alpha: KD weight in `(1 - alpha) * task + alpha * kd_loss`, in [0, 1].
        temperature: KD softmax temperature, > 0.
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        if student is teacher:
            raise ValueError(
                "`student` and `teacher` are the same object; the teacher must be a separate, "
                "frozen model."
            )
        check_attention_args(p, reduction)
        if isinstance(temperature, bool) or not (
            isinstance(temperature, (int, float)) and temperature > 0
        ):
            raise ValueError(f"`temperature` must be a number > 0, got {temperature!r}.")
        self.p, self.reduction, self.temperature = p, reduction, float(temperature)
        self._given_input_shape = tuple(input_shape) if input_shape is not None else None

        # === Networks and taps ===
        self.student, self.teacher = student, teacher
        teacher.trainable = False
        shape = feat.common_input_shape(student, teacher, self._given_input_shape)
        student_graph = feat.graph_model(student, "student", shape)
        teacher_graph = feat.graph_model(teacher, "teacher", shape)
        self.pairs = feat.resolve_pairs(pairs, student_graph, teacher_graph)
        feat.check_class_counts(student_graph, teacher_graph, alpha)
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
            conv = keras.layers.Conv2D(
                t_f.shape[-1], 1, use_bias=False, kernel_initializer="he_normal",
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

    def _set_loss_weight(self, name, value):
        value = check_weight(name, value)
        self._loss_weights[name].assign(value)
        if self._activate(name, value):
            # A term that was off is not in the traced step: trace it again, once.
            if self.train_function is not None:
                self.make_train_function(force=True)
            if self.test_function is not None:
                self.make_test_function(force=True)

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
        """Forward (and input gradient when `gradients`) of one tap: logits, features, task, J."""
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
            task = self._task_loss(y, outputs[0], sample_weight)
            # The gradient of the summed per-example losses: J does not shrink with batch size.
            summed = task * ops.cast(ops.shape(x)[0], task.dtype)
        jacobian = inner.gradient(summed, x)
        if flip:
            jacobian = ops.flip(jacobian, axis=2)
        return outputs[0], outputs[1:], task, jacobian

    def _teacher_outputs(self, x, y, sample_weight, cached=None):
        """Teacher logits, features and J_T; with `cached` J_T, a forward pass only if needed."""
        active = self._active
        fresh = "grad_beta" in active and cached is None
        logits, features, jacobian = None, [], None
        if fresh or active & {"beta", "alpha", "hint_beta"}:
            logits, features, _, jacobian = self._run(
                self._taps.teacher, x, y, sample_weight, training=False, gradients=fresh
            )
            logits, features = tf.stop_gradient(logits), [tf.stop_gradient(f) for f in features]
        if cached is not None:
            jacobian = step_gradients(cached, sample_weight, self._task_loss_fn)
        return logits, features, None if jacobian is None else tf.stop_gradient(jacobian)

    def _compute_terms(self, x, y, sample_weight, training, cached=None):
        """All terms of the total loss, as a dict {history key: per-replica mean}."""
        active = self._active
        t_logits, t_features, t_jacobian = self._teacher_outputs(x, y, sample_weight, cached)
        needs_gradient = bool(active & set(GRADIENT_WEIGHTS))
        logits, s_features, task, jacobian = self._run(
            self._taps.student, x, y, sample_weight, training, needs_gradient
        )
        if task is None:
            task = self._task_loss(y, logits, sample_weight)
        terms = {"task_loss": task}
        if "beta" in active:
            terms["at_loss"] = sum(
                at_loss(s, t, p=self.p, reduction=self.reduction)
                for s, t in zip(s_features, t_features)
            )
        if "hint_beta" in active:
            terms["hint_loss"] = sum(
                hint_loss(a(s) if a is not None else s, t)
                for a, s, t in zip(self.hint_adapters, s_features, t_features)
            )
        if "alpha" in active:
            terms["kd_loss"] = kd_loss(logits, t_logits, self.temperature)
        if "grad_beta" in active:
            terms["grad_at_loss"] = input_gradient_distance(jacobian, t_jacobian)
        flipped_logits = None
        if "symmetry_beta" in active:
            flipped_logits, _, _, flipped = self._run(
                self._taps.student, x, y, sample_weight, training, True, True
            )
            terms["symmetry_loss"] = input_gradient_distance(jacobian, flipped)
        if "input_grad_penalty" in active:
            terms["input_grad_loss"] = input_gradient_distance(jacobian)
        if "symmetry_output_beta" in active:
            if flipped_logits is None:  # eq. 6 off: a forward pass on flip(x), no inner tape
                flipped_logits, *_ = self._run(
                    self._taps.student, x, y, sample_weight, training, False, True
                )
            terms["symmetry_output_loss"] = symmetry_output_loss(logits, flipped_logits)
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
            maps[feat.pair_name(s_name, t_name)] = (
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
        """As `keras.Model.save`, but an existing file is kept unless `overwrite=True`."""
        refuse_overwrite(filepath, overwrite)
        super().save(filepath, overwrite=True, **kwargs)

    def save_weights(self, filepath, overwrite: bool = False, **kwargs):
        """As `keras.Model.save_weights`, but an existing file is kept unless `overwrite=True`."""
        refuse_overwrite(filepath, overwrite)
        super().save_weights(filepath, overwrite=True, **kwargs)

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
