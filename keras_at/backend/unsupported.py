"""A Keras backend the Distiller does not run on (torch, numpy, openvino): a clear error."""

from __future__ import annotations

import keras


def refuse(*_args, **_kwargs):
    raise NotImplementedError(
        f"keras_at.Distiller runs on the TensorFlow and JAX backends of Keras; this process uses "
        f"KERAS_BACKEND={keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow or "
        "KERAS_BACKEND=jax before Keras is imported. The pure `keras.ops` pieces "
        "(keras_at.at_loss, keras_at.AttentionTransfer in keras.distillation) run here."
    )


check_labels = compiled = input_gradient = linear_map = replicas = refuse


def check_same_batch(student, teacher, message: str):
    """`teacher`: `keras_at.at_loss` runs here too, eagerly, where every shape is known (the
    caller's static check compared them)."""
    del student, message
    return teacher
