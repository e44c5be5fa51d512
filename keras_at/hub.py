"""keras-hub tasks as teacher or student: each network sees the images its preprocessor makes.

A keras-hub `Task` (an `ImageClassifier` such as `ResNetImageClassifier`) applies its
`preprocessor` in its own `fit`, `evaluate` and `predict`, over the data, before the network
sees it; calling the task as a model does not. The Distiller runs both networks on the same
batch inside its step, so each task's preprocessing has to run there, on that network's side
only: `with_preprocessor` gives the Distiller a functional model `raw images -> logits` that
applies the task's image converter (resize to its `image_size`, multiply by `scale`, add
`offset`) and then the task, a nested model sharing its weights. The Distiller's `student`
and `teacher` stay the user's task objects; only the networks it taps are these models.
`export_student` puts the same conversion, as core Keras layers, in front of the exported copy.

What runs in the step is the image converter of an `ImageClassifierPreprocessor` (or an
`ImageConverter` set as the preprocessor itself), exactly as keras-hub computes it (checked on
a probe image when the model is built). Any other preprocessor (a tokenizer, one that reads
labels, a subclass with its own `call`, an arbitrary layer or function) is refused with a
`ValueError` that says to apply it in the data pipeline instead; it is never ignored.

keras-hub stays optional: nothing here imports it. A model is a keras-hub task only if
keras-hub was imported to build it.
"""

from __future__ import annotations

import sys

import keras
import numpy as np

from keras_at import backend

# The probe image's extra rows and columns over the converter's size: a resize that crops to
# the aspect ratio and scales, as real images need.
_PROBE_MARGIN = (5, 11)


class ImageConversion(keras.layers.Layer):
    """A keras-hub image converter's resize, scale and offset, as one layer of the step's graph.

    The resize is the converter's own `keras.layers.Resizing` (crop or pad to the aspect ratio,
    interpolation, antialiasing as configured), made differentiable twice
    (`keras_at.backend.linear_map`) for gradient AT; `scale` and `offset` are a
    `keras.layers.Rescaling`. A layer of the Distiller's networks, never saved: the saved
    networks are the tasks, with their preprocessors.

    Args:
        converter: a `keras_hub.layers.ImageConverter` for channels-last images.
    """

    def __init__(self, converter, **kwargs):
        super().__init__(dtype=converter.dtype_policy, **kwargs)
        self.converter = converter
        self.rescaling = _rescaling(converter)

    def call(self, images, training=None):
        # Passed on explicitly: `Resizing.call` defaults to training=True, and Keras hands a
        # sub-layer's default on to the layers called after it (the task would train).
        training = False if training is None else training
        if self.converter.image_size is not None:
            resizing = self.converter.resizing
            images = backend.linear_map(lambda x: resizing(x, training=training), images)
        if self.rescaling is not None:
            images = self.rescaling(images)
        return images

    def compute_output_shape(self, input_shape):
        if self.converter.image_size is None:
            return input_shape
        return self.converter.resizing.compute_output_shape(input_shape)


def with_preprocessor(model, role: str, input_shape=None):
    """`model` with its keras-hub preprocessor applied first; `model` itself when it has none.

    For a keras-hub `Task` whose preprocessor converts images (`ImageClassifierPreprocessor`,
    or an `ImageConverter` as the preprocessor), a functional model `raw images -> logits`:
    an `ImageConversion` layer, then the task as a nested model (its weights are the task's).
    Its input is the raw images: when the converter resizes, `input_shape` if given, else
    `(None, None, C)` (any size is resized); otherwise the task's own input shape.

    Args:
        model: any Keras model; only a keras-hub `Task` with a preprocessor is changed.
        role: `"student"` or `"teacher"`, for messages.
        input_shape: `(H, W, C)` of the raw images, or None.

    Returns:
        A `keras.Model` reading raw images.

    Raises:
        ValueError: the task's preprocessor cannot run inside the training step.
    """
    where = "inside the Distiller's training step"
    converter = _image_converter(model, role, where)
    if converter is None:
        return model
    return _behind_conversion(model, model, converter, role, where, input_shape)


def exported_with_preprocessor(task, copy):
    """`copy` (a core-Keras copy of `task`) behind `task`'s image conversion, as core Keras
    layers (`keras.layers.Resizing` with the converter's config, `keras.layers.Rescaling`), so
    the exported model reads raw images as `task.predict` does; `copy` itself when `task` has
    no keras-hub preprocessor."""
    where = "in an exported core Keras model"
    converter = _image_converter(task, "student", where)
    if converter is None:
        return copy

    def conversion(images):
        if converter.image_size is not None:
            config = converter.resizing.get_config()
            images = keras.layers.Resizing.from_config(config)(images, training=False)
        rescaling = _rescaling(converter)
        return images if rescaling is None else rescaling(images)

    return _behind_conversion(task, copy, converter, "student", where, None, conversion)


def _behind_conversion(task, network, converter, role, where, input_shape, conversion=None):
    """`keras.Model(raw images, network(conversion(raw images)))`, its conversion checked."""
    if converter.image_size is not None:
        shape = tuple(input_shape) if input_shape else (None, None, task.inputs[0].shape[-1])
    else:
        shape = tuple(task.inputs[0].shape[1:])
    if conversion is None:
        conversion = ImageConversion(converter, name=f"{task.name}_image_conversion")
    _check_conversion(conversion, converter, task, role, where, shape)
    images = keras.Input(shape=shape, name=f"{task.name}_images")
    # The task's name: messages about the network name the user's model.
    return keras.Model(images, network(conversion(images)), name=task.name)


def _rescaling(converter):
    """The converter's `x * scale + offset` as a `keras.layers.Rescaling`, or None."""
    if converter.scale is None and converter.offset is None:
        return None
    return keras.layers.Rescaling(
        1.0 if converter.scale is None else converter.scale,
        0.0 if converter.offset is None else converter.offset,
        dtype=converter.dtype_policy,
    )


def _image_converter(model, role, where):
    """The `ImageConverter` a keras-hub task's preprocessor applies to images; None for a model
    that is not a task, has no preprocessor or one that leaves images as they are; a
    `ValueError` for a preprocessor that does something else."""
    hub = sys.modules.get("keras_hub")
    if hub is None or not isinstance(model, hub.models.Task) or model.preprocessor is None:
        return None
    preprocessor = model.preprocessor
    classifier_preprocessor = hub.models.ImageClassifierPreprocessor
    if isinstance(preprocessor, hub.layers.ImageConverter):
        converter = preprocessor  # Task.preprocess_samples calls a plain layer on the images
    elif isinstance(preprocessor, classifier_preprocessor) and not _overrides(
        preprocessor, classifier_preprocessor, ("call",)
    ):
        converter = preprocessor.image_converter
        if converter is None:
            return None  # it passes the images through unchanged
        if not isinstance(converter, hub.layers.ImageConverter):
            _refuse(model, role, where, f"its image_converter is a {type(converter).__name__}")
    else:
        _refuse(model, role, where, "it is not an image converter")
    if _overrides(converter, hub.layers.ImageConverter, ("call", "_call_python", "_call_tf")):
        _refuse(model, role, where, f"its image converter {type(converter).__name__} converts "
                "images with code of its own")
    if converter.data_format != "channels_last":
        _refuse(model, role, where, f"its image converter reads {converter.data_format} images; "
                "keras_at's are channels-last")
    return converter


def _overrides(obj, base, names) -> bool:
    """Whether `obj`'s class defines any of the methods `names` differently from `base`."""
    return any(getattr(type(obj), n, None) is not getattr(base, n, None) for n in names)


def _check_conversion(conversion, converter, task, role, where, shape):
    """Refuses the task when `conversion` does not give what the converter gives on a probe.

    Guards against a keras-hub version whose `ImageConverter` does more than resize, scale and
    offset: the step would then train on other images than the task's `predict` reads.
    """
    size = converter.image_size or (8, 8)
    height, width = (s if s is not None else size[i] + _PROBE_MARGIN[i]
                     for i, s in enumerate(shape[:2]))
    probe = np.random.default_rng(0).uniform(0, 255, (2, height, width, shape[2]))
    probe = probe.astype("float32")
    expected = keras.ops.convert_to_numpy(converter(probe))
    got = keras.ops.convert_to_numpy(conversion(probe))
    if expected.shape != got.shape or not np.allclose(
        got, expected, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(expected)))
    ):
        _refuse(task, role, where,
                f"its image converter {type(converter).__name__} does more than resize, scale "
                "and offset in this keras-hub version")


def _refuse(task, role, where, reason):
    preprocessor = task.preprocessor
    name = getattr(preprocessor, "name", None) or getattr(preprocessor, "__name__", "")
    raise ValueError(
        f"The {role} {task.name!r} is a keras-hub {type(task).__name__} whose preprocessor "
        f"{name!r} ({type(preprocessor).__name__}) cannot run {where}: {reason}. Only an image "
        "converter's resize, scale and offset (an ImageClassifierPreprocessor's "
        "image_converter) can. Apply the preprocessor in your data pipeline instead (e.g. "
        "`dataset.map(task.preprocessor)`) and set `task.preprocessor = None`: the network then "
        "reads the images your pipeline makes (in a Distiller, both networks do)."
    )
