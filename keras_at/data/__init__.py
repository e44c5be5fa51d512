"""Datasets for attention-transfer experiments: offline first, per-example augmentation.

`load(name, split, ...)` gives a batched, normalised `tf.data.Dataset`; `info(name)` the
metadata (classes, native shape, mean/std) that models and examples need;
`with_teacher_gradients` training data that carries precomputed teacher input gradients.

The pipelines are `tf.data`, so this package needs TensorFlow, on any Keras backend (a JAX
user's `fit` reads a `tf.data.Dataset` as well). Its names are imported on first use:
`import keras_at` works without TensorFlow, and the Distiller then fits numpy arrays.
"""

from __future__ import annotations

import importlib

# Each public name, and the module that defines it.
_NAMES = {
    "KNOWN": "catalog",
    "DatasetInfo": "catalog",
    "Augmentation": "augment",
    "from_arrays": "pipeline",
    "info": "pipeline",
    "load": "pipeline",
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
            "it, give the Distiller numpy arrays: `distiller.fit(x, y, batch_size=...)`."
        ) from error
    value = getattr(module, name)
    globals()[name] = value  # the next access finds it without this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_NAMES))
