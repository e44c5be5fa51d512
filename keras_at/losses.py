"""The transfer losses of the paper, written with `keras.ops`.

- `at_loss`: eq. 2, activation-based attention transfer for one pair of layers.
- `kd_loss`: Hinton et al.'s knowledge distillation term.
- `hint_loss`: full-activation transfer (F-ActT, FitNets-style hints, §4.1.2).
- `input_gradient_distance`: eq. 4 (gradient-based AT), eq. 6 (flip symmetry)
  and Drucker & LeCun's input-gradient penalty all measure a squared l2
  distance between input-gradient tensors; one function serves the three.
- `symmetry_output_loss`: the outputs half of the symmetry norm (§3.2, "l2 losses on the
  obtained attentions and outputs"): the same distance between the logits of x and flip(x).

Every function returns a float32 scalar averaged over the batch, so the
`Distiller` adds `weight * loss` for each term and the weights mean the same
whatever the batch size. Each is the batch mean of its `*_per_example`
variant, a `(B,)` vector that the `Distiller` averages with the sample
weights (`weighted_mean`).
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

from keras_at import backend
from keras_at._argument_checks import FLOAT32, as_float32, check_number, shapes_match
from keras_at.attention import l2_normalize_flat, normalized_attention, resize_maps


def _same_batch(student, teacher, name: str):
    """`teacher`, after checking it has the student's batch size: statically, else inside the
    compiled step (`keras_at.backend.check_same_batch`)."""
    b_s, b_t = student.shape[0], teacher.shape[0]
    if b_s is not None and b_t is not None:
        if b_s != b_t:
            raise ValueError(
                f"{name} compares example by example, but the student's tensor has batch size "
                f"{b_s} and the teacher's {b_t}; give both networks' outputs for the same batch."
            )
        return teacher
    return backend.check_same_batch(
        student, teacher, f"{name}: the student's and the teacher's batch sizes (x, y below) differ"
    )


def task_loss(loss, y, logits, sample_weight=None):
    """The compiled task loss `loss(y, logits, sample_weight)` as a per-replica mean.

    Per-example weights `(B,)` weigh every position of per-position outputs `(B, H, W, K)`.

    Keras losses divide by the replica count under `tf.distribute`; the Distiller's terms are
    per-replica means, divided by the replica count once, for the total.
    """
    if loss is None:
        raise ValueError("Call `distiller.compile(...)` before training or evaluating.")
    if sample_weight is not None and len(sample_weight.shape) == 1 and len(logits.shape) > 2:
        # One weight per example, for a loss of one value per output position, (B, H, W).
        sample_weight = ops.reshape(sample_weight, (-1,) + (1,) * (len(logits.shape) - 2))
    value = loss(y, ops.cast(logits, "float32"), sample_weight)
    replicas = backend.replicas()
    return value if replicas == 1 else value * replicas


def weighted_mean(values, sample_weight=None):
    """`sum_b w_b * values_b / B`: Keras's "sum_over_batch_size" reduction of a weighted loss.

    As for Keras's task loss, examples of weight 0 still count in B, so a term and the task
    loss weigh each example alike.

    Args:
        values: `(B,)` per-example losses.
        sample_weight: `(B,)` weights, or None for the plain mean.
    """
    if sample_weight is None:
        return ops.mean(values)
    weighted = values * ops.cast(sample_weight, values.dtype)
    return ops.sum(weighted) / ops.cast(ops.shape(values)[0], values.dtype)


def at_loss(student_features, teacher_features, p: float = 2, reduction: str = "sum"):
    """One attention-transfer term (eq. 2): mean squared difference of normalised maps.

    Both attention maps are flattened per example and l2-normalised; the loss
    is the mean over batch and positions of their squared difference. This
    is the scaling of the authors' code: the `Distiller` adds
    `beta * sum(at_loss)` with `beta=1e3`, the mean doing the "divided by map
    size and batch" of the paper's text. When the maps differ in height and
    width, the teacher's map is resized (bilinear) to the student's size;
    channel counts may differ freely.

    Args:
        student_features: student activations `(B, H, W, C_s)`.
        teacher_features: teacher activations `(B, H', W', C_t)`.
        p: exponent of the attention mapping function.
        reduction: `"sum"`, `"mean"` or `"max"` over channels.

    Returns:
        A float32 scalar in `[0, 2 / (H * W)]`.

    Examples:
        >>> import numpy as np, keras_at
        >>> s = np.random.rand(2, 8, 8, 16).astype("float32")
        >>> float(keras_at.at_loss(s, s))
        0.0
    """
    return ops.mean(at_loss_per_example(student_features, teacher_features, p, reduction))


def at_loss_per_example(student_features, teacher_features, p: float = 2,
                        reduction: str = "sum"):
    """`at_loss` of each example, shape `(B,)`: the mean over positions only."""
    teacher_features = _same_batch(student_features, teacher_features, "at_loss")
    q_s, q_t = compared_maps(student_features, teacher_features, p, reduction)
    return ops.mean(ops.square(q_s - q_t), axis=-1)


def compared_maps(student_features, teacher_features, p: float = 2, reduction: str = "sum"):
    """`(q_s, q_t)`: the `(B, H*W)` normalised maps eq. 2 compares, the teacher's resized to
    the student's `(H, W)`."""
    size = tuple(student_features.shape[1:3])
    q_s = normalized_attention(student_features, p=p, reduction=reduction)
    q_t = normalized_attention(teacher_features, p=p, reduction=reduction, size=size)
    return q_s, q_t


# The KD term scales by T²: T² must be a normal float32 (T=2e19 gives inf * 0 = NaN, T=1e-20
# a term of 0), so T lies between the square roots of float32's smallest normal and largest.
TEMPERATURE_RANGE = (float(np.sqrt(FLOAT32.tiny)), float(np.sqrt(FLOAT32.max)))


def check_temperature(value) -> float:
    """The KD temperature as a float, or a `ValueError`: it must be finite and > 0, and its
    float32 square, the KD term's factor, a normal float32 (`TEMPERATURE_RANGE`)."""
    value = check_number(value, "temperature")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`temperature` must be a finite number > 0, got {value!r}.")
    stored = as_float32(value)
    with np.errstate(over="ignore", under="ignore"):
        square = stored * stored
    if not FLOAT32.tiny <= square <= FLOAT32.max:
        low, high = TEMPERATURE_RANGE
        raise ValueError(
            f"`temperature`={value!r} is out of range for float32: the KD term scales by T², "
            f"which must be a normal float32, so T must be between {low:.3g} and {high:.3g}."
        )
    return value


def kd_loss(student_logits, teacher_logits, temperature: float = 4.0):
    """Knowledge distillation term: T² · KL(softmax(t/T) ‖ softmax(s/T)), batch mean.

    The T² factor keeps the gradient scale of the soft targets independent
    of the temperature (Hinton et al., 2015). The `Distiller` combines it as
    `(1 - alpha) * task_loss + alpha * kd_loss`. Per-position logits, such as a
    segmentation network's `(B, H, W, num_classes)`, give the KL of each position,
    averaged over the positions of each example, then over the batch.

    Args:
        student_logits: `(B, num_classes)` (or `(B, ..., num_classes)`) unnormalised student
            outputs.
        teacher_logits: unnormalised teacher outputs of the same shape.
        temperature: softmax temperature T > 0.

    Returns:
        A float32 scalar, zero when the two logit vectors are equal.

    Examples:
        >>> import numpy as np, keras_at
        >>> z = np.random.randn(4, 10).astype("float32")
        >>> round(float(keras_at.kd_loss(z, z)), 6)
        0.0
    """
    temperature = check_temperature(temperature)
    return ops.mean(kd_loss_per_example(student_logits, teacher_logits, temperature))


def kd_loss_per_example(student_logits, teacher_logits, temperature=4.0):
    """`kd_loss` of each example, shape `(B,)`: the KL of each output position (the last axis
    holds the classes), averaged over the example's positions. `temperature` may be a tensor or
    variable."""
    student_logits = ops.cast(student_logits, "float32")
    teacher_logits = ops.cast(teacher_logits, "float32")
    check_kd_shapes(student_logits.shape, teacher_logits.shape)
    t = ops.cast(temperature, "float32")
    log_p_s = ops.log_softmax(student_logits / t, axis=-1)
    log_p_t = ops.log_softmax(teacher_logits / t, axis=-1)
    kl = (t * t) * ops.sum(ops.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
    if len(kl.shape) > 1:
        kl = ops.mean(kl, axis=tuple(range(1, len(kl.shape))))
    return kl


def check_kd_shapes(student_shape, teacher_shape, name: str = "kd_loss") -> None:
    """Refuses logits KD cannot compare: a single output unit (its softmax is always 1, so KD
    would be 0), other class counts, or per-position outputs of other shapes."""
    student_shape, teacher_shape = tuple(student_shape), tuple(teacher_shape)
    if student_shape[-1] == 1:
        raise ValueError(
            f"{name} compares softmax distributions over the classes (the last axis), but the "
            f"student's outputs have shape {student_shape} with a single unit: its softmax is "
            "always 1 and the KD term always 0. KD needs one logit per class (a one-output "
            "regression or binary model cannot use it: set alpha=0)."
        )
    s_classes, t_classes = student_shape[-1], teacher_shape[-1]
    if None not in (s_classes, t_classes) and s_classes != t_classes:
        raise ValueError(
            f"{name} needs the same number of classes, but the student has {s_classes} logits "
            f"and the teacher {t_classes}."
        )
    if not shapes_match(student_shape[1:], teacher_shape[1:]):
        raise ValueError(
            f"{name} compares the logits position by position, but the student's outputs have "
            f"shape {student_shape} and the teacher's {teacher_shape} (batch axis first); give "
            "both networks outputs of the same shape."
        )


def hint_loss(student_features, teacher_features):
    """Full-activation transfer (F-ActT): mean squared difference of normalised activations.

    As for attention, each example's activation tensor is flattened and
    l2-normalised first (the paper: "we also use l2 normalization before
    transfer losses"), and the teacher's activations are resized (bilinear)
    to the student's height and width. Channel counts must already agree:
    the `Distiller` puts a trainable 1×1 convolution on the student side
    where they do not.

    Args:
        student_features: `(B, H, W, C)` student activations (after any adapter).
        teacher_features: `(B, H', W', C)` teacher activations.

    Returns:
        A float32 scalar.
    """
    return ops.mean(hint_loss_per_example(student_features, teacher_features))


def hint_loss_per_example(student_features, teacher_features):
    """`hint_loss` of each example, shape `(B,)`."""
    if student_features.shape[-1] != teacher_features.shape[-1]:
        raise ValueError(
            "hint_loss needs equal channel counts, got student "
            f"{student_features.shape[-1]} and teacher {teacher_features.shape[-1]}; "
            "use a 1x1 convolution adapter on the student side."
        )
    teacher_features = _same_batch(student_features, teacher_features, "hint_loss")
    size = tuple(student_features.shape[1:3])
    s = l2_normalize_flat(ops.cast(student_features, "float32"))
    t = l2_normalize_flat(resize_maps(ops.cast(teacher_features, "float32"), size))
    return ops.mean(ops.square(s - t), axis=-1)


def input_gradient_distance(gradient, other=None):
    """Half the squared l2 distance between input gradients, averaged over the batch.

    `0.5 * mean_b ||J_b - J'_b||²`, the sum running over all pixels and
    channels of one example. With `other=None` it is the Drucker & LeCun
    penalty `0.5 * mean_b ||J_b||²`. It is eq. 4 of the paper (gradient AT)
    when `other` is the teacher's gradient, and eq. 6 (flip symmetry) when
    `other` is `flip(J(flip(x)))`; the paper's β/2 is this 0.5. The gradients
    are per-example gradients of the task loss (the gradient of the sum of
    per-example losses), so the value does not shrink with the batch size.

    Args:
        gradient: `(B, H, W, C)` input gradient.
        other: optional tensor of the same shape.

    Returns:
        A float32 scalar.
    """
    return ops.mean(input_gradient_distance_per_example(gradient, other))


def input_gradient_distance_per_example(gradient, other=None):
    """`input_gradient_distance` of each example, `0.5 * ||J_b - J'_b||²`, shape `(B,)`."""
    diff = ops.cast(gradient, "float32")
    if other is not None:
        diff = diff - ops.cast(other, "float32")
    flat = ops.reshape(diff, (ops.shape(diff)[0], -1))
    return 0.5 * ops.sum(ops.square(flat), axis=-1)


def symmetry_output_loss(logits, flipped_logits):
    """The outputs term of the symmetry norm: `0.5 * mean_b ||s(x)_b - s(flip x)_b||²`.

    §3.2 of the paper enforces flip invariance with "l2 losses on the obtained attentions
    and outputs"; eq. 6 writes the attention term only. This is the other one: the student's
    outputs on an image and on its horizontal flip kept close, scaled as eq. 6's term (the
    paper's β/2, a sum over the classes, a mean over the batch).

    The outputs are the logits, not softmax probabilities: in the authors' code a network
    returns its logits as its output (`y_s, y_t`, which `distillation` turns into
    probabilities itself), and logits keep the term from vanishing where both softmaxes
    saturate, which would leave confident but asymmetric predictions unpenalised.

    Args:
        logits: `(B, num_classes)` logits of the images.
        flipped_logits: `(B, num_classes)` logits of their horizontal flips.

    Returns:
        A float32 scalar, zero for a flip-invariant network.
    """
    return ops.mean(symmetry_output_loss_per_example(logits, flipped_logits))


def symmetry_output_loss_per_example(logits, flipped_logits):
    """`symmetry_output_loss` of each example, shape `(B,)`."""
    return input_gradient_distance_per_example(logits, flipped_logits)
