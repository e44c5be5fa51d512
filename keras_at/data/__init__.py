"""Datasets for attention-transfer experiments: offline first, per-example augmentation.

`load(name, split, ...)` gives a batched, normalised `tf.data.Dataset`; `info(name)` the
metadata (classes, native shape, mean/std) that models and examples need;
`with_teacher_gradients` training data that carries precomputed teacher input gradients.
"""

from keras_at.data.augment import Augmentation
from keras_at.data.catalog import KNOWN, DatasetInfo
from keras_at.data.pipeline import from_arrays, info, load
from keras_at.data.teacher_gradients import with_teacher_gradients

__all__ = [
    "KNOWN",
    "Augmentation",
    "DatasetInfo",
    "from_arrays",
    "info",
    "load",
    "with_teacher_gradients",
]
