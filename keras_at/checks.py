"""Refusing what would fail later: bad images, labels, sample weights, empty data, overwriting.

Each check raises early, while the step is traced or before `fit` starts, with
a message that names the problem, instead of a TensorFlow traceback from
inside the graph hours into training.
"""

from __future__ import annotations

import tensorflow as tf

from keras_at._validate import shapes_match

# The name scope of the label check's few ops in the traced step.
LABEL_CHECK_SCOPE = "check_labels"


def check_batch(x, y, tap, model_name: str):
    """Refuses images the tapped student cannot take, and labels outside its classes (or float
    class indices with a fractional part), printing the offending label values.

    Returns `y`, made to wait for the label check: a loss reading the returned labels cannot
    run first and fail with its own, less clear, message.
    """
    if isinstance(x, (dict, list, tuple)):
        raise ValueError(
            "The Distiller expects a single image tensor as input, or (images, "
            f"teacher_gradients) for gradient AT; got a {type(x).__name__}."
        )
    if not x.dtype.is_floating:
        raise ValueError(
            f"Images must be floating point, got dtype {x.dtype.name}; normalise them "
            "(keras_at.data.load does) or cast them before fit/evaluate."
        )
    expected = tuple(tap.inputs[0].shape[1:])
    got = tuple(x.shape[1:])
    if not shapes_match(got, expected):
        raise ValueError(
            f"Images of shape {got} (batch dimension left out) do not fit the student "
            f"{model_name!r}, which expects {expected}: check the rank (B, H, W, C), "
            "the channel count and the image size."
        )
    classes = tap.outputs[0].shape[-1]
    if y is None or not (y.dtype.is_integer or (y.dtype.is_floating and _sparse(y, classes))):
        return y  # one-hot or soft labels: the loss reads them as given
    with tf.name_scope(LABEL_CHECK_SCOPE):
        checks = []
        if y.dtype.is_floating:
            # A sparse loss casts float labels to int: 2.7 would silently become class 2.
            fractional = tf.not_equal(y, tf.round(y))
            checks.append(_assert_none(
                fractional, y, "Float labels must be whole class indices; fractional labels:"
            ))
        outside = (y < 0) | (y >= tf.cast(classes, y.dtype))
        checks.append(_assert_none(
            outside, y, f"Labels must be in [0, {classes}), the student's classes; got labels:"
        ))
        with tf.control_dependencies(checks):
            return tf.identity(y)


def _sparse(y, classes) -> bool:
    """Whether float `y` holds one class index per example, `(B,)` or `(B, 1)`, rather than
    one-hot rows or a binary classifier's soft targets (one logit)."""
    rank = y.shape.rank
    return classes != 1 and (rank == 1 or (rank == 2 and y.shape[-1] == 1))


def _assert_none(bad, y, message):
    """An assertion that no element of `bad` is true, printing the offending values of `y`.

    The offending values are gathered only when the check fails (in a `tf.cond` branch), so a
    step with good labels runs a reduction and a branch, not a mask of the batch.
    """

    def fail():
        offending, _ = tf.unique(tf.reshape(tf.boolean_mask(y, bad), [-1]))
        check = tf.debugging.Assert(False, [message, offending], summarize=20)
        with tf.control_dependencies([check]):
            return tf.constant(False)

    return tf.cond(tf.reduce_any(bad), fail, lambda: tf.constant(True))


def refuse_empty(x) -> None:
    """A `ValueError` for a dataset or array known to hold no example."""
    if isinstance(x, tf.data.Dataset):
        empty = int(x.cardinality()) == 0
    else:
        empty = hasattr(x, "shape") and len(x.shape) > 0 and x.shape[0] == 0
    if empty:
        raise ValueError("The training data is empty: fit() needs at least one batch.")


def per_example_weights(sample_weight):
    """Sample weights `(B,)` or `(B, 1)` as a float32 `(B,)` vector (None stays None).

    The Distiller weighs each example's transfer terms by it, so it must be one number per
    example: the weights Keras makes from `class_weight` are.
    """
    if sample_weight is None:
        return None
    shape = tuple(sample_weight.shape)
    if len(shape) > 2 or (len(shape) == 2 and shape[1] not in (1, None)):
        raise ValueError(
            f"The Distiller weighs every loss term per example: sample weights must be one per "
            f"example, shape (B,) or (B, 1); got shape {shape}."
        )
    return tf.reshape(tf.cast(sample_weight, tf.float32), (-1,))
