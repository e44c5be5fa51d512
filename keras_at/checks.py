"""Refusing what would fail later: bad images and labels, empty data, overwriting a file.

Each check raises early, while the step is traced or before `fit` starts, with
a message that names the problem, instead of a TensorFlow traceback from
inside the graph hours into training.
"""

from __future__ import annotations

import os

import tensorflow as tf

# The name scope of the label check's few ops in the traced step.
LABEL_CHECK_SCOPE = "check_labels"


def check_batch(x, y, tap, model_name: str) -> None:
    """Refuses images the tapped student cannot take, and labels outside its classes."""
    if isinstance(x, (dict, list, tuple)):
        raise ValueError("The Distiller expects a single image tensor as input.")
    if not x.dtype.is_floating:
        raise ValueError(
            f"Images must be floating point, got dtype {x.dtype.name}; normalise them "
            "(keras_at.data.load does) or cast them before fit/evaluate."
        )
    expected = tuple(tap.inputs[0].shape[1:])
    got = tuple(x.shape[1:])
    if len(got) != len(expected) or any(
        e is not None and g is not None and e != g for e, g in zip(expected, got)
    ):
        raise ValueError(
            f"Images of shape {got} (batch dimension left out) do not fit the student "
            f"{model_name!r}, which expects {expected}: check the rank (B, H, W, C), "
            "the channel count and the image size."
        )
    if y is not None and y.dtype.is_integer:
        classes = tap.outputs[0].shape[-1]
        with tf.name_scope(LABEL_CHECK_SCOPE):
            in_range = tf.reduce_all((y >= 0) & (y < tf.cast(classes, y.dtype)))
            tf.debugging.Assert(
                in_range, [f"Labels must be in [0, {classes}), the student's classes; got:", y]
            )


def refuse_empty(x) -> None:
    """A `ValueError` for a dataset or array known to hold no example."""
    if isinstance(x, tf.data.Dataset):
        empty = int(x.cardinality()) == 0
    else:
        empty = hasattr(x, "shape") and len(x.shape) > 0 and x.shape[0] == 0
    if empty:
        raise ValueError("The training data is empty: fit() needs at least one batch.")


def refuse_overwrite(filepath, overwrite: bool) -> None:
    """A `FileExistsError` naming `filepath` when it exists and `overwrite` is false."""
    if not overwrite and os.path.exists(filepath):
        raise FileExistsError(
            f"{filepath} exists; pass overwrite=True to replace it, or choose another path."
        )
