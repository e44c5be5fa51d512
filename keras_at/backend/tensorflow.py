"""The step's primitives on TensorFlow: an inner `tf.GradientTape`, `tf.function`, in-graph checks.

The trainer (`keras_at.trainers.tensorflow`) runs the step; these are what the maths below it
needs from the backend (`keras_at.backend`).
"""

from __future__ import annotations

import tensorflow as tf

# The name scope of the label check's few ops in the traced step.
LABEL_CHECK_SCOPE = "check_labels"


def replicas() -> int:
    """The replicas of the current `tf.distribute` strategy (1 outside one)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def input_gradient(tap, function, x):
    """`(d function(x)[0] / dx, function(x)[1])`: an inner tape on the images alone.

    Inside the step's outer tape, the gradient is itself differentiable (double backprop).
    `tap` (the model `function` runs) is the JAX plumbing's business only.
    """
    del tap
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        value, aux = function(x)
    return tape.gradient(value, x), aux


def linear_map(function, x):
    """`function(x)` for a `function` linear in the images `x`, differentiable any number of
    times.

    TensorFlow registers no gradient for the gradient of a bilinear resize (it is "not
    differentiable"), so gradient AT through a resize would silently lose its second
    derivative. A linear map's gradient is its transpose, and the transpose's gradient is the
    map itself: both are given here as custom gradients.
    """

    @tf.custom_gradient
    def apply(x):
        return function(x), transpose

    @tf.custom_gradient
    def transpose(upstream):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            y = function(x)
        return tape.gradient(y, x, output_gradients=upstream), apply

    return apply(x)


def compiled(function, variables=()):
    """`function` as a `tf.function` traced once per input signature; it reads `variables`
    live, as TensorFlow functions do."""
    del variables
    return tf.function(function, reduce_retracing=True)


def check_labels(y, classes: int, whole: bool, ignore_class=None):
    """`y`, made to wait for an in-graph assertion that its labels are in `[0, classes)` or equal
    to `ignore_class` (and, with `whole`, that float labels have no fractional part), printing
    the offending values."""
    with tf.name_scope(LABEL_CHECK_SCOPE):
        checks = []
        if whole:
            # A sparse loss casts float labels to int: 2.7 would silently become class 2.
            checks.append(_assert_none(
                tf.not_equal(y, tf.round(y)), y,
                "Float labels must be whole class indices; fractional labels:",
            ))
        outside = (y < 0) | (y >= tf.cast(classes, y.dtype))
        allowed = f"[0, {classes}), the student's classes"
        if ignore_class is not None:
            outside &= tf.not_equal(y, tf.cast(ignore_class, y.dtype))
            allowed += f", or {ignore_class}, the loss's ignore_class"
        checks.append(_assert_none(
            outside, y, f"Labels must be in {allowed}; got labels:"
        ))
        with tf.control_dependencies(checks):
            return tf.identity(y)


def check_same_batch(student, teacher, message: str):
    """`teacher`, made to wait for an in-graph assertion that its batch size (unknown while
    tracing) is the student's; `message` names the comparison."""
    check = tf.debugging.assert_equal(tf.shape(student)[0], tf.shape(teacher)[0], message=message)
    with tf.control_dependencies([check]):
        return tf.identity(teacher)


def _assert_none(bad, y, message):
    """An assertion that no element of `bad` is true, printing the offending values of `y`.

    The offending values are gathered only when the check fails (in a `tf.cond` branch), so a
    step with good labels runs a reduction and a branch, not a mask of the batch.
    """

    def fail():
        # Flat first: a retraced step may know neither tensor's rank.
        offending, _ = tf.unique(tf.boolean_mask(tf.reshape(y, [-1]), tf.reshape(bad, [-1])))
        check = tf.debugging.Assert(False, [message, offending], summarize=20)
        with tf.control_dependencies([check]):
            return tf.constant(False)

    return tf.cond(tf.reduce_any(bad), fail, lambda: tf.constant(True))
