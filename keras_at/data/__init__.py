"""Datasets for attention-transfer experiments: offline first, per-example augmentation.

`load(name, split, ...)` gives a batched, normalised `tf.data.Dataset`; `info(name)` the
metadata (classes, native shape, mean/std) that models and examples need.
"""

from keras_at.data.augment import Augmentation
from keras_at.data.catalog import KNOWN, DatasetInfo
from keras_at.data.pipeline import from_arrays, info, load

__all__ = ["KNOWN", "Augmentation", "DatasetInfo", "from_arrays", "info", "load"]
