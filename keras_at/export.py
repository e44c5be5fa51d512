"""Shipping the student: a float32 copy of core Keras layers, loaded where keras_at is not.

keras-at's models use `keras_at.models.BatchNorm` (TensorFlow's fused kernel, Torch's running
variance), a class registered with Keras: a `.keras` file holding it loads only where
`keras_at` is imported. In inference that layer computes exactly what
`keras.layers.BatchNormalization` computes from the same four weights, so the exported copy
swaps one for the other and keeps every weight and setting.

A student trained under a mixed dtype policy ("mixed_bfloat16", "mixed_float16") computes in
half precision; served as it is, it returns bfloat16 / float16 and TensorFlow Lite cannot
convert it. The copy is float32 by default: every layer's policy becomes "float32" (a mixed
policy's variables are float32 already, so the weights are the same numbers).
"""

from __future__ import annotations

import os
import warnings

import keras
import numpy as np

from keras_at import hub
from keras_at._argument_checks import refuse_overwrite
from keras_at._graph import is_graph_model
from keras_at.distiller import Distiller
from keras_at.models.batch_norm import BatchNorm
from keras_at.saving import save_atomically

__all__ = ["export_student", "to_core_keras"]


def export_student(
    model_or_distiller, path, overwrite: bool = False, dtype_policy: str | None = "float32"
) -> keras.Model:
    """Saves the student as a float32 `.keras` file of core Keras layers; returns that model.

    Every `keras_at.models.BatchNorm` becomes a `keras.layers.BatchNormalization` with the same
    config (epsilon, momentum, axis, regularisers, ...) and the same weights, inside nested
    functional models too; every other layer is copied as it is. The file loads with
    `keras.saving.load_model(path)` (`safe_mode=True`) where keras-at is not installed, and
    the returned model serves with `model.export(dir)` (a TensorFlow SavedModel) and converts
    with `tf.lite.TFLiteConverter`. The returned model is a copy: training the student further
    does not change it.

    With the default `dtype_policy="float32"` every layer computes in float32, whatever policy
    the student was trained under: a student trained with `"mixed_bfloat16"` or
    `"mixed_float16"` exports to a model whose outputs are float32 and equal the student's
    outputs (cast to float32) to half-precision round-off; a float32 student's, to float32
    round-off. `dtype_policy=None` keeps each layer's policy (a mixed student stays mixed,
    e.g. to serve on an accelerator with bfloat16 units; TFLite does not convert it).

    A keras-hub task or backbone (`keras_hub.models.ImageClassifier`, `ResNetBackbone`, ...) is
    copied as its layer graph, into plain functional models: where its layers are core Keras
    layers (keras-hub's ResNet), the file loads without keras-hub. Layers whose classes come
    from another library (keras-hub's own layers, in a ViT for instance) or from your code stay
    as they are, and a backbone whose layers do not rebuild from their configs (keras-hub's
    ViT) is rebuilt by its own class; the file then loads only where those classes are
    imported (`import keras_hub` registers keras-hub's), and a `UserWarning` names them. A
    task's image converter (`keras_at.hub`) is put in front as core Keras `Resizing` and
    `Rescaling` layers: the exported model reads raw images, as `task.predict` does.

    Args:
        model_or_distiller: a `keras_at.Distiller` (its `student` is exported) or a functional
            or `Sequential` `keras.Model`.
        path: the `.keras` file to write; written to a temporary file in the same folder,
            then renamed, so an interrupted export leaves no partial file at `path`.
        overwrite: replace an existing file at `path`; otherwise that is a `FileExistsError`.
        dtype_policy: `"float32"` (default): every layer with a floating-point policy
            (`"mixed_bfloat16"`, `"mixed_float16"`, `"bfloat16"`, ...) is exported with the
            `"float32"` policy and float32 weights; quantized layers (`layer.quantize(...)`)
            keep theirs. `None`: every layer keeps its own policy.

    Returns:
        The exported `keras.Model` (uncompiled), the model saved at `path`.

    Example:

    ```python
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    ...  # build and train the Distiller
    student = keras_at.export_student(distiller, "student.keras")  # float32
    # elsewhere, without keras-at:
    student = keras.saving.load_model("student.keras")
    ```
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"`path` must end with .keras (Keras's saving format), got {path!r}.")
    refuse_overwrite(path, overwrite)
    student = _student_of(model_or_distiller)
    core = to_core_keras(student, dtype_policy=dtype_policy)
    _warn_about_what_the_file_needs(core, path)
    core = hub.exported_with_preprocessor(student, core)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_atomically(core.save, path, overwrite)
    return core


def to_core_keras(model: keras.Model, dtype_policy: str | None = "float32") -> keras.Model:
    """A copy of a functional or `Sequential` model with `BatchNorm` replaced by Keras's own.

    Nested functional and `Sequential` models are copied the same way; the weights are copied
    layer by layer.

    Args:
        model: a functional or `Sequential` `keras.Model`.
        dtype_policy: `"float32"` (default) or `None`, as in `export_student`.

    Returns:
        The copy, uncompiled, with the same inputs, outputs, names and weights.
    """
    float32 = _check_dtype_policy(dtype_policy)
    _check_graph(model)
    copy = _clone_graph(model, float32)
    source, target = _leaf_layers(model), _leaf_layers(copy)
    for original, clone in zip(source, target, strict=True):
        # float32 variables where a "bfloat16" / "float16" policy made half-precision ones.
        clone.set_weights([np.asarray(value).astype(variable.dtype) for value, variable
                           in zip(original.get_weights(), clone.weights, strict=True)])
    left = [f"{layer.name} ({type(layer).__name__})" for layer in target
            if type(layer).__module__.startswith("keras_at.")]
    if left:  # a keras_at layer this function does not know how to replace
        raise ValueError(
            f"The model {model.name!r} holds keras_at layers without a core Keras equivalent: "
            f"{', '.join(left)}."
        )
    if float32:
        _check_float32_outputs(model, copy)
    return copy


def _check_dtype_policy(dtype_policy) -> bool:
    """Whether the copy is to be float32; anything but "float32" or None is refused."""
    if dtype_policy is None:
        return False
    name = dtype_policy.name if isinstance(dtype_policy, keras.DTypePolicy) else dtype_policy
    if name != "float32":
        raise ValueError(
            '`dtype_policy` must be "float32" (every layer exported in float32, the default) or '
            f"None (every layer keeps its own policy), got dtype_policy={dtype_policy!r}."
        )
    return True


def _warn_about_what_the_file_needs(core: keras.Model, path: str) -> None:
    """Warns when the file needs classes other than Keras's."""
    outside = {}
    for layer in _leaf_layers(core, with_models=True):
        package = type(layer).__module__.split(".")[0]
        if package != "keras":
            outside.setdefault(package, []).append(f"{layer.name} ({type(layer).__name__})")
    if outside:
        listed = "; ".join(f"{package}: {', '.join(names)}" for package, names in outside.items())
        warnings.warn(
            f"{path} holds layers whose classes are not Keras's own ({listed}). It loads only "
            f"where they are imported and registered (`import {sorted(outside)[0]}`).",
            stacklevel=3,
        )


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


def _clone_graph(model: keras.Model, float32: bool) -> keras.Model:
    """`model` re-traced layer by layer (nested graph models too) into Keras's own model classes.

    A library's model class whose layers do not rebuild from their own configs (keras-hub's
    ViT: `ViTPatchingAndEmbedding.get_config()` holds arguments its constructor refuses) is
    rebuilt as the library saves and loads it, by its class's `from_config`.
    """
    try:
        return keras.models.clone_model(
            model, clone_function=lambda layer: _clone_layer(layer, float32)
        )
    except (TypeError, ValueError) as err:
        if type(model).__module__.startswith("keras."):
            raise
        config = model.get_config()
        if float32 and "dtype" in config and _float_but_not_float32(model.dtype_policy):
            config["dtype"] = "float32"
        try:
            return type(model).from_config(config)
        except (TypeError, ValueError) as second:
            raise ValueError(
                f"The {type(model).__name__} {model.name!r} cannot be copied: re-tracing its "
                f"layers failed ({err}) and so did rebuilding it from its config ({second})."
            ) from second


def _clone_layer(layer: keras.layers.Layer, float32: bool) -> keras.layers.Layer:
    if isinstance(layer, keras.Model) and is_graph_model(layer):
        return _clone_graph(layer, float32)
    return _core_layer(layer, float32)


def _check_float32_outputs(model: keras.Model, copy: keras.Model) -> None:
    """A layer that ignores the policy in its config would leave half-precision outputs."""
    wrong = [f"{tensor.name} ({tensor.dtype})" for tensor in copy.outputs
             if keras.backend.is_float_dtype(tensor.dtype) and tensor.dtype != "float32"]
    if wrong:
        raise ValueError(
            f"The float32 copy of {model.name!r} still has outputs of another floating-point "
            f"dtype: {', '.join(wrong)}; a layer did not take the float32 policy from its "
            "config. Pass dtype_policy=None to export the model with its own policies."
        )


def _core_layer(layer: keras.layers.Layer, float32: bool) -> keras.layers.Layer:
    """A fresh, unbuilt copy of `layer`; a `BatchNorm` as `keras.layers.BatchNormalization`;
    with the "float32" policy if `float32` and its policy is another floating-point one."""
    config = layer.get_config()
    policy = getattr(layer, "dtype_policy", None)  # ops in the graph (`x[:, 0]`) have none
    if float32 and policy is not None and _float_but_not_float32(policy):
        config["dtype"] = "float32"
    if isinstance(layer, BatchNorm):
        return keras.layers.BatchNormalization.from_config(config)
    return layer.__class__.from_config(config)


def _float_but_not_float32(policy: keras.DTypePolicy) -> bool:
    """A floating-point policy other than float32; quantized ones are left as they are."""
    if policy.quantization_mode is not None:
        return False
    dtypes = {policy.compute_dtype, policy.variable_dtype}
    return dtypes != {"float32"} and all(keras.backend.is_float_dtype(d) for d in dtypes)


def _leaf_layers(model: keras.Model, with_models: bool = False) -> list:
    """The layers of `model` and of its nested models, depth first, in the graph's order;
    the nested models themselves too, before their layers, if `with_models`."""
    leaves = []
    for layer in model.layers:
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            if with_models:
                leaves.append(layer)
            leaves.extend(_leaf_layers(layer, with_models))
        else:
            leaves.append(layer)
    return leaves
