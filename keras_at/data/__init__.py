"""Datasets for attention-transfer experiments: offline first, per-example augmentation.

`load(name, split, ...)` gives batched, normalised data: a `tf.data.Dataset` where TensorFlow
is installed, otherwise an `ArrayDataset` (a `keras.utils.PyDataset`; `pipeline=` picks one).
`info(name)` gives the metadata (classes, native shape, mean/std) that models and examples
need; `with_teacher_gradients` training data that carries precomputed teacher input gradients.

Either pipeline feeds `fit` on any Keras backend. Without TensorFlow, `load`, `from_arrays` and
`info` work for the named datasets; image folders, CUB, TFDS directories and
`with_teacher_gradients` need it and say so. Names are imported on first use, so
`import keras_at` imports no TensorFlow.
"""

from __future__ import annotations

import importlib

# Each public name, and the module that defines it.
_NAMES = {
    "KNOWN": "catalog",
    "ArrayDataset": "numpy_pipeline",
    "DatasetInfo": "catalog",
    "Augmentation": "augment",
    "from_arrays": "loader",
    "info": "loader",
    "load": "loader",
    "with_teacher_gradients": "teacher_gradients",
}

__all__ = sorted(_NAMES, key=str.lower)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'keras_at.data' has no attribute {name!r}")
    try:
        module = importlib.import_module(f"keras_at.data.{_NAMES[name]}")
    except ModuleNotFoundError as error:
        if error.name != "tensorflow":
            raise
        raise ImportError(
            f"keras_at.data.{name} builds tf.data pipelines, which need TensorFlow "
            "(`pip install tensorflow`; the CPU build is enough on any Keras backend). Without "
            "it, keras_at.data.load and from_arrays give the named datasets and in-memory "
            "arrays as a keras.utils.PyDataset (pipeline='numpy')."
        ) from error
    value = getattr(module, name)
    globals()[name] = value  # the next access finds it without this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_NAMES))
