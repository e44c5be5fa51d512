"""Shipping the student: a copy made of core Keras layers, saved where keras_at is not installed.

keras-at's models use `keras_at.models.BatchNorm` (TensorFlow's fused kernel, Torch's running
variance), a class registered with Keras: a `.keras` file holding it loads only where
`keras_at` is imported. In inference that layer computes exactly what
`keras.layers.BatchNormalization` computes from the same four weights, so the exported copy
swaps one for the other and keeps every weight and setting.
"""

from __future__ import annotations

import os

import keras

from keras_at import hub
from keras_at._graph import is_graph_model
from keras_at._validate import refuse_overwrite
from keras_at.distiller import Distiller
from keras_at.models.batch_norm import BatchNorm
from keras_at.saving import save_atomically

__all__ = ["export_student", "to_core_keras"]


def export_student(model_or_distiller, path, overwrite: bool = False) -> keras.Model:
    """Saves the student as a `.keras` file of core Keras layers and returns that model.

    Every `keras_at.models.BatchNorm` becomes a `keras.layers.BatchNormalization` with the same
    config (epsilon, momentum, axis, regularisers, ...) and the same weights, inside nested
    functional models too; every other layer is copied as it is. The file loads with
    `keras.saving.load_model(path)` (`safe_mode=True`) where keras-at is not installed, and
    the returned model serves with `model.export(dir)` (a TensorFlow SavedModel) and converts
    with `tf.lite.TFLiteConverter`. Inference outputs equal the student's to float32 round-off.
    The returned model is a copy: training the student further does not change it. Layers of
    other libraries, or your own, stay as they are and need their code where the file loads.
    A keras-hub task's image converter (`keras_at.hub`) is put in front as core Keras
    `Resizing` and `Rescaling` layers: the exported model reads raw images, as `task.predict`.

    Args:
        model_or_distiller: a `keras_at.Distiller` (its `student` is exported) or a functional
            or `Sequential` `keras.Model`.
        path: the `.keras` file to write; written to a temporary file in the same folder,
            then renamed, so an interrupted export leaves no partial file at `path`.
        overwrite: replace an existing file at `path`; otherwise that is a `FileExistsError`.

    Returns:
        The exported `keras.Model` (uncompiled), the model saved at `path`.

    Example:

    ```python
    student = keras_at.export_student(distiller, "student.keras")
    # elsewhere, without keras-at:
    student = keras.saving.load_model("student.keras")
    ```
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"`path` must end with .keras (Keras's saving format), got {path!r}.")
    refuse_overwrite(path, overwrite)
    student = _student_of(model_or_distiller)
    core = hub.exported_with_preprocessor(student, to_core_keras(student))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_atomically(core.save, path, overwrite)
    return core


def to_core_keras(model: keras.Model) -> keras.Model:
    """A copy of a functional or `Sequential` model with `BatchNorm` replaced by Keras's own.

    Nested functional and `Sequential` models are copied the same way; the weights are copied
    layer by layer.

    Args:
        model: a functional or `Sequential` `keras.Model`.

    Returns:
        The copy, uncompiled, with the same inputs, outputs, names and weights.
    """
    _check_graph(model)
    copy = keras.models.clone_model(model, clone_function=_core_layer, recursive=True)
    source, target = _leaf_layers(model), _leaf_layers(copy)
    for original, clone in zip(source, target, strict=True):
        clone.set_weights(original.get_weights())
    left = [f"{layer.name} ({type(layer).__name__})" for layer in target
            if type(layer).__module__.startswith("keras_at.")]
    if left:  # a keras_at layer this function does not know how to replace
        raise ValueError(
            f"The model {model.name!r} holds keras_at layers without a core Keras equivalent: "
            f"{', '.join(left)}."
        )
    return copy


def _student_of(model_or_distiller) -> keras.Model:
    if isinstance(model_or_distiller, Distiller):
        return model_or_distiller.student
    if not isinstance(model_or_distiller, keras.Model):
        raise ValueError(
            "export_student needs a keras_at.Distiller or a keras.Model, got a "
            f"{type(model_or_distiller).__name__}."
        )
    return model_or_distiller


def _check_graph(model: keras.Model) -> None:
    """Only a layer graph can be re-traced; a subclassed model's `call` is code, not layers."""
    if not is_graph_model(model):
        raise ValueError(
            f"Only functional and Sequential models can be exported to core Keras layers; "
            f"{model.name!r} is a subclassed {type(model).__name__}, whose `call` is Python "
            "code. Save it with `model.save()`; its classes must be importable where it loads."
        )


def _core_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A fresh, unbuilt copy of `layer`; a `BatchNorm` as `keras.layers.BatchNormalization`."""
    if isinstance(layer, BatchNorm):
        return keras.layers.BatchNormalization.from_config(layer.get_config())
    return layer.__class__.from_config(layer.get_config())


def _leaf_layers(model: keras.Model) -> list:
    """The layers of `model` and of its nested models, depth first, in the graph's order."""
    leaves = []
    for layer in model.layers:
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            leaves.extend(_leaf_layers(layer))
        else:
            leaves.append(layer)
    return leaves
