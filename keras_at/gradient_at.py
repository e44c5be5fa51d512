"""Gradient-based attention transfer (eq. 4) and eq. 6's plumbing: input gradients, cached J_T.

Eq. 4 compares the student's input gradient J_S with the teacher's J_T; eq. 6 compares J_S(x)
with flip(J_S(flip x)); Drucker & LeCun penalise ||J_S||. Each J is d/dx of the network's
summed per-example task loss, so an example's J does not shrink with the batch size
(`forward_with_input_gradient`). The distances themselves are `keras_at.losses`.

The teacher is frozen and runs in inference mode, so J_T is a fixed function of the image and
its label: computed once per training example with the step's own code
(`teacher_input_gradients`) and given back with the images as `((images, J_T), labels)`, it is
exact, not an approximation, as long as every image the student sees is one J_T was computed
for. With horizontal flips as the only augmentation (the paper's Table 3) an example has two
images, x and flip(x), and two gradients, J_T(x) and J_T(flip x) (not flip(J_T(x)): a teacher
is not flip-symmetric); `keras_at.data.teacher_gradients.cached_gradient_dataset` computes
both. Random crops, or any other augmentation, need J_T of the augmented image: feed images
alone and the step computes it. What the cache saves on a given machine is measured by
`benchmarks/gradient_at.py`.

Memory: N·H·W·C·4 bytes (float32) per gradient table, two tables with flips, plus the images
in float32: 1.8 GB in all for CIFAR-10's 50,000 training images.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_at import backend, task
from keras_at._argument_checks import check_int, shapes_match
from keras_at.batch_checks import check_batch, dtype_name
from keras_at.losses import task_loss


def forward(tap, x, training, flip: bool = False):
    """`(logits, [feature maps])` of one tap model (logits alone is a tap without features).

    With `flip`, the tap sees the images flipped horizontally.
    """
    if flip:
        x = ops.flip(x, axis=2)
    outputs = tap(x, training=training)
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    return outputs[0], outputs[1:]


def forward_with_input_gradient(tap, x, y, loss, training, flip: bool = False):
    """`(logits, features, J, task)`: `forward`, each example's input gradient J of the task
    loss, and that task loss (the unweighted per-replica mean, `losses.task_loss`).

    J is d/dx of the summed per-example task losses (`loss`, the compiled Keras loss), so it
    does not shrink with the batch size. It is unweighted: sample weights weigh the terms built
    from it, as they weigh every other term. With `flip`, the tap sees flip(x) and J is flipped
    back into x's coordinates: flip(J(flip x)), eq. 6's second operand.
    """
    if flip:
        x = ops.flip(x, axis=2)

    def summed_loss(x):
        logits, features = forward(tap, x, training)
        mean = task_loss(loss, y, logits)
        return mean * ops.cast(ops.shape(x)[0], mean.dtype), (logits, features, mean)

    jacobian, (logits, features, mean) = backend.input_gradient(tap, summed_loss, x)
    if flip:
        jacobian = ops.flip(jacobian, axis=2)
    return logits, features, jacobian, mean


# === The teacher's J_T, computed once ===


def check_per_example_loss(loss) -> None:
    """Refuses a task loss whose input gradient of one example depends on the rest of the batch.

    Cached teacher gradients are computed once per example; they equal the step's own only
    when the loss averages per-example losses over the batch (Keras's default reduction) over
    a fixed number of values per example: not with `ignore_class`, whose mean runs over the
    batch's labelled positions.
    """
    reduction = getattr(loss, "reduction", "sum_over_batch_size")
    if reduction not in ("sum_over_batch_size", "mean"):
        raise ValueError(
            f"Cached teacher gradients need a task loss that averages per-example losses over the "
            f"batch (reduction='sum_over_batch_size', the default); the compiled loss has "
            f"reduction={reduction!r}, which makes each example's gradient depend on the batch."
        )
    ignored = task.ignored_class(loss)
    if ignored is not None:
        raise ValueError(
            f"Cached teacher gradients need a task loss whose value for an example does not "
            f"depend on the batch; the compiled loss has ignore_class={ignored}, so "
            "it averages over the labelled positions of the whole batch. Feed images alone: "
            "the step computes the teacher's gradients of each batch."
        )


def teacher_gradient_function(teacher, student, loss, student_name: str = "student"):
    """J_T of one batch `(images, labels)`, compiled (`keras_at.backend.compiled`): a
    `tf.function` traced once per image shape, or a `jax.jit` reading the teacher's weights.

    `teacher` and `student` are the Distiller's tap models (the student's checks the images
    and labels as the step does); `loss` is the compiled task loss.
    """

    def teacher_gradients(images, labels):
        labels = check_batch(images, labels, student, student_name, loss)
        _, _, jacobian, _ = forward_with_input_gradient(
            teacher, images, labels, loss, training=False
        )
        return jacobian

    return backend.compiled(teacher_gradients, teacher.variables)


def teacher_input_gradients(x, y, loss, batch_function, batch_size: int = 128) -> np.ndarray:
    """The teacher's input gradient J_T of every example, as the training step computes it.

    J_T is d/dx of the teacher's summed per-example task loss, in inference mode: a fixed
    function of `(x, y)`. Given back as `((x, J_T), y)`, the Distiller's step reads it instead
    of running the teacher's forward and backward pass. Sample weights weigh each example's
    term, not J_T, in the step as here. `Distiller.teacher_input_gradients(x, y)` calls this.

    Args:
        x: `(N, H, W, C)` floating-point images, as the networks see them.
        y: `(N,)` labels.
        loss: the compiled task loss (Keras's default reduction: see `check_per_example_loss`).
        batch_function: J_T of one batch, a `teacher_gradient_function`.
        batch_size: examples per call of `batch_function` (the result does not depend on it).

    Returns:
        float32 `(N, H, W, C)`: N·H·W·C·4 bytes of memory.
    """
    check_per_example_loss(loss)
    check_int(batch_size, "batch_size")
    if len(x) != len(y):
        raise ValueError(f"Expected as many labels as images; got {len(x)} images and "
                         f"{len(y)} labels.")
    out = np.empty(np.shape(x), "float32")
    for start in range(0, len(x), batch_size):
        end = start + batch_size
        out[start:end] = batch_function(
            ops.convert_to_tensor(x[start:end]), ops.convert_to_tensor(y[start:end])
        )
    return out


# === A step's batch ===


def split_teacher_gradients(x, grad_at_on: bool):
    """`(images, teacher_gradients)` of a step's input, the gradients None when not given.

    Refuses precomputed teacher gradients that the step would not read (gradient AT never
    on) or that cannot belong to the images (another shape).
    """
    if not (isinstance(x, (list, tuple)) and len(x) == 2):
        return x, None
    images, gradients = x
    if not grad_at_on:
        raise ValueError(
            "Inputs were given as (images, teacher_gradients), but grad_beta is 0 and was never "
            "on: only gradient AT reads the teacher's gradients. Give images alone, or construct "
            "the Distiller with grad_beta > 0 (a schedule may still set it to 0 for a while)."
        )
    if not keras.backend.is_float_dtype(gradients.dtype):
        raise ValueError(
            f"teacher_gradients must be floating point, got {dtype_name(gradients)}."
        )
    got, expected = tuple(gradients.shape), tuple(images.shape)
    if not shapes_match(got, expected):
        raise ValueError(
            f"teacher_gradients of shape {got} do not match the images' shape {expected}: each "
            "image needs the teacher's gradient at that image (Distiller.teacher_input_gradients)."
        )
    return images, gradients


def step_gradients(cached, loss):
    """The step's J_T from a cached one, checked: the gradient of the summed per-example losses.

    Sample weights do not scale it: the step weighs each example's distance `||J_S - J_T||²`
    by the example's weight, as for every other term.
    """
    check_per_example_loss(loss)
    return ops.cast(cached, "float32")
