"""A batch refused before it would fail later: bad images, labels, sample weights, empty data.

Each check raises early, while the step is traced or before `fit` starts, with
a message that names the problem, instead of a traceback from inside the compiled
step hours into training. The label check needs the labels' values, so it runs inside
the step (`keras_at.backend.check_labels`).
"""

from __future__ import annotations

import sys

import keras
from keras import ops

from keras_at import backend, task
from keras_at._argument_checks import shapes_match


def dtype_name(x) -> str:
    """The Keras name of `x`'s dtype (`"float32"`, `"int64"`, ...), on any backend."""
    return keras.backend.standardize_dtype(x.dtype)


def check_batch(x, y, tap, model_name: str, loss=None):
    """Refuses images the tapped student cannot take, and, for a task `loss` that reads class
    indices (`keras_at.task.class_index_labels`), labels outside the student's classes or float
    labels with a fractional part, printing the offending values.

    Returns `y`, made to wait for the label check: a loss reading the returned labels cannot
    run first and fail with its own, less clear, message. Labels of any other loss (one-hot,
    multi-hot, regression targets, a loss it does not know) are the loss's to read as given.
    """
    if isinstance(x, (dict, list, tuple)):
        raise ValueError(
            "The Distiller expects a single image tensor as input, or (images, "
            f"teacher_gradients) for gradient AT; got a {type(x).__name__}."
        )
    if not keras.backend.is_float_dtype(x.dtype):
        raise ValueError(
            f"Images must be floating point, got dtype {dtype_name(x)}; normalise them "
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
    if y is None:
        return y
    return check_class_indices(y, tap.outputs[0].shape, loss)


def check_class_indices(y, logits_shape, loss):
    """`y`, checked where `loss` reads class indices: one index per output position (shape
    `logits_shape` without its class axis, or with a class axis of 1), each in
    `[0, classes)` or the loss's `ignore_class`, whole if floating point."""
    try:
        shape = tuple(y.shape)
    except ValueError:  # a TensorFlow tensor of unknown rank: the values are still checked
        shape = None
    indices, ignore_class = task.class_index_labels(loss, shape, tuple(logits_shape))
    floating = keras.backend.is_float_dtype(y.dtype)
    if not indices or not (floating or keras.backend.is_int_dtype(y.dtype)):
        return y
    rank, outputs = len(shape) if shape is not None else None, len(logits_shape)
    if rank is not None and not (
        rank == outputs - 1 or (rank == outputs and shape[-1] in (1, None))
    ):
        raise ValueError(
            f"The task loss {loss.name!r} reads one class index per output position: labels of "
            f"shape {_shape(logits_shape[:-1])} or {_shape((*logits_shape[:-1], 1))} for "
            f"outputs of shape {_shape(logits_shape)}; got labels of shape {_shape(shape)}. "
            "One-hot or soft labels go with CategoricalCrossentropy."
        )
    return backend.check_labels(y, logits_shape[-1], whole=floating, ignore_class=ignore_class)


def _shape(shape) -> str:
    """A shape as a user reads it, `B` for the batch axis: `(B, 32, 32)`."""
    dims = ["B", *(str(d) for d in tuple(shape)[1:])]
    return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"


def refuse_empty(x, method: str = "fit", data: str = "training data") -> None:
    """A `ValueError` for a dataset, `PyDataset` or array known to hold no example, naming the
    `data` and the `method` it was given to."""
    tf = sys.modules.get("tensorflow")  # a tf.data.Dataset needs TensorFlow imported
    if tf is not None and isinstance(x, tf.data.Dataset):
        empty = int(x.cardinality()) == 0
    elif isinstance(x, keras.utils.PyDataset):
        empty = x.num_batches == 0
    else:
        empty = hasattr(x, "shape") and len(x.shape) > 0 and x.shape[0] == 0
    if empty:
        raise ValueError(f"The {data} is empty: {method}() needs at least one batch.")


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
    return ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
