"""`load()`: a named dataset or an image folder as batched, normalised training data.

Two pipelines give the same examples, normalisation and augmentation: `tf.data` (the default
where TensorFlow is installed; `keras_at.data.pipeline`) and numpy, a `keras.utils.PyDataset`
that needs no TensorFlow (`keras_at.data.numpy_pipeline`). Either feeds `fit` on any Keras
backend. This module needs no TensorFlow: it picks the pipeline and imports it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from keras_at._argument_checks import check_int
from keras_at.data import catalog, cub, folders, sources, splits
from keras_at.data.augment import Augmentation
from keras_at.data.catalog import DatasetInfo

if TYPE_CHECKING:
    import tensorflow as tf

    from keras_at.data.numpy_pipeline import ArrayDataset

PIPELINES = ("auto", "tf", "numpy")


def info(name: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> DatasetInfo:
    """Metadata of a dataset: classes, native image shape, normalisation, augmentation.

    Named datasets need no files for this. An image folder (`name` a path, or a folder name
    inside `data_dir`) is scanned for its class sub-folders; a CUB-200-2011 folder (one holding
    `images.txt`, see `keras_at.data.cub`) is read from `classes.txt`. Needs no TensorFlow.

    Examples:
        >>> info("cifar10").num_classes, info("cifar10").image_shape
        (10, (32, 32, 3))
    """
    if isinstance(name, str) and name in catalog.KNOWN:
        return catalog.named_info(name)
    root = folders.find(name, data_dir)
    if root is None:
        where = f" (nor a folder {os.path.join(data_dir, name)})" if data_dir is not None else ""
        raise ValueError(
            f"Unknown dataset {name!r}{where}: expected one of {list(catalog.KNOWN)} "
            "or a path to a folder of class sub-folders (or a CUB-200-2011 folder)."
        )
    if cub.is_cub(root):
        return cub.info(root)
    classes = folders.class_names(root)
    return catalog.image_info(root, classes, Augmentation(pad=0, crop_area=(0.08, 1.0)))


def load(
    name: str | os.PathLike,
    split: str = "train",
    batch_size: int = 128,
    augment: bool | Augmentation | None = None,
    data_dir: str | os.PathLike | None = None,
    shuffle: bool | None = None,
    seed: int | None = None,
    limit: int | None = None,
    image_size: int | tuple[int, int] | None = None,
    pipeline: str = "auto",
) -> tf.data.Dataset | ArrayDataset:
    """Batches of `(float32 images (B, H, W, C), int32 labels)`: a `tf.data.Dataset`, or
    without TensorFlow a `keras.utils.PyDataset`.

    Images are normalised per channel with the dataset's mean and std (see `info`). Labels are
    those of the source files, in source order when `shuffle=False`.

    Args:
        name: `"cifar10"`, `"cifar100"`, `"fashion_mnist"`, `"mnist"`, `"digits"`
            (scikit-learn's 8x8 digits upsampled to 32x32; works offline), a path to a folder
            of class sub-folders (see `keras_at.data.folders`) or a CUB-200-2011 folder (see
            `keras_at.data.cub`).
        split: `"train"`, `"test"` (image folders: their split sub-folders) or a TFDS slicing
            string such as `"train[:90%]"`, `"train[45000:]"` or `"train[:10%]+test"`.
        batch_size: examples per batch; the last batch may be smaller.
        augment: None for the dataset's standard augmentation on splits made only of "train"
            (including slices of it) and none on others; True/False to force it on/off; or an
            `Augmentation`. CIFAR and Fashion-MNIST: reflect-pad 4, random crop, horizontal
            flip; MNIST and digits: the same without flip; folders: random resized crop + flip;
            CUB: bounding-box crop, shorter side to 256/224 of `image_size`, random crop + flip.
            Drawn per example. Without augmentation, image folders and CUB are evaluated on a
            single crop: the shorter side rescaled to `round(256/224 * image_size)` (256 for
            224), then the central `image_size` window; named datasets are resized whole.
        data_dir: where to look first for the files (see `keras_at.data.sources`), or the
            parent folder of an image-folder `name`.
        shuffle: shuffle every epoch; None shuffles splits made only of "train".
        seed: makes shuffling and augmentation reproducible (each epoch still differs). The
            two pipelines draw differently: the same seed gives each its own order.
        limit: keep the first `limit` examples of the split, in source order, before shuffling.
        image_size: `(height, width)` or an int for square images; None keeps the native size
            (image folders and CUB: 224x224).
        pipeline: `"tf"` for a `tf.data.Dataset`; `"numpy"` for an `ArrayDataset`, a
            `keras.utils.PyDataset` that needs no TensorFlow (named datasets only: image folders
            and CUB are decoded by TensorFlow); `"auto"` for `"tf"` where TensorFlow is
            installed and `"numpy"` where it is not.

    Returns:
        A `tf.data.Dataset` with known cardinality (number of batches), or an `ArrayDataset`
        whose `len()` is the number of batches (see `keras_at.data.ArrayDataset` for its
        epochs and workers).

    Raises:
        ValueError: unknown name, bad split or argument, corrupt file (named in the message).
        FileNotFoundError: the data is nowhere on disk and cannot be downloaded; the message
            lists every place searched.
        ImportError: the `tf.data` pipeline (asked for, or for image folders and CUB) or a
            TFDS directory where TensorFlow is not installed.

    Examples:
        >>> train = load("digits", "train[:90%]", batch_size=64, seed=0)
        >>> val = load("digits", "train[90%:]", augment=False, shuffle=False)
        >>> images, labels = next(iter(train))
        >>> images.shape, labels.shape
        (TensorShape([64, 32, 32, 1]), TensorShape([64]))
    """
    kind = _pipeline_kind(pipeline)
    check_batch_size(batch_size)
    meta = info(name, data_dir)
    parts = splits.parse(split)
    if limit is not None and (not isinstance(limit, int | np.integer) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None; got {limit!r}.")
    train_only = all(part.name == "train" for part in parts)
    augmentation = _augmentation(augment, meta, train_only)
    shuffle = train_only if shuffle is None else bool(shuffle)
    size = _image_size(image_size, meta)
    where = f"{meta.name!r} split {split!r}"

    if meta.name in catalog.KNOWN:
        arrays = sources.read(meta.name, splits.names(parts, catalog.SPLITS), data_dir)
        chosen = splits.select(parts, {s: len(labels) for s, (_, labels) in arrays.items()})
        images = _concat([arrays[s][0][positions] for s, positions in chosen])[:limit]
        labels = _concat([arrays[s][1][positions] for s, positions in chosen])[:limit]
        check_nonempty(labels, where)
        return from_arrays(
            images, labels, batch_size, augmentation, shuffle, seed, meta.mean, meta.std, size,
            pipeline=kind,
        )
    if pipeline == "numpy":
        raise ValueError(
            f"pipeline='numpy' serves the named datasets {list(catalog.KNOWN)}; {meta.name} is "
            "read from image files, which tf.data decodes: use pipeline='tf' (or 'auto') with "
            "TensorFlow installed."
        )
    if kind == "numpy":  # "auto" without TensorFlow
        raise ImportError(
            f"keras_at.data.load reads image folders and CUB ({meta.name}) through tf.data, "
            "which needs TensorFlow (`pip install tensorflow`; the CPU build is enough on any "
            f"Keras backend). The named datasets {list(catalog.KNOWN)} load without it."
        )
    from keras_at.data import pipeline as tf_pipeline

    return tf_pipeline.files_dataset(
        meta, parts, batch_size, augmentation, shuffle, seed, limit, size, where
    )


def from_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 128,
    augmentation: Augmentation | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_size: tuple[int, int] | None = None,
    pipeline: str = "auto",
) -> tf.data.Dataset | ArrayDataset:
    """The `load()` pipeline for in-memory uint8 images `(N, H, W, C)` (values 0..255).

    `mean`/`std` are per channel on the [0, 1] scale; None computes them from `images`.
    `pipeline` is `load()`'s: `"tf"`, `"numpy"` or `"auto"`.

    Examples:
        >>> x = np.zeros((10, 8, 8, 3), np.uint8)
        >>> data = from_arrays(x, np.arange(10), 4, mean=(0.5,) * 3, std=(0.25,) * 3)
        >>> images, labels = next(iter(data))
        >>> images.shape, float(images[0, 0, 0, 0])
        (TensorShape([4, 8, 8, 3]), -2.0)
    """
    kind = _pipeline_kind(pipeline)
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(
            f"from_arrays expects images (N, H, W, C) and N labels; got {images.shape} and "
            f"{labels.shape}."
        )
    if mean is None or std is None:
        pixels = images.reshape(-1, images.shape[-1]) / 255.0
        mean = pixels.mean(axis=0) if mean is None else mean
        std = pixels.std(axis=0) if std is None else std
    size = images.shape[1:3] if image_size is None else image_size
    if kind == "numpy":
        from keras_at.data.numpy_pipeline import ArrayDataset

        return ArrayDataset(
            images, labels, batch_size, augmentation, shuffle, seed, mean, std, size
        )
    from keras_at.data import pipeline as tf_pipeline

    return tf_pipeline.arrays_dataset(
        images, labels, batch_size, augmentation, shuffle, seed, mean, std, size
    )


def check_batch_size(batch_size) -> int:
    """`batch_size` as an int, or a `ValueError` (an integer >= 1)."""
    return check_int(batch_size, "batch_size")


def check_nonempty(labels: np.ndarray, where: str) -> None:
    if len(labels) == 0:
        raise ValueError(f"{where} selects no examples.")


def _pipeline_kind(pipeline: str) -> str:
    """`"tf"` or `"numpy"` for `load()`'s `pipeline`; an ImportError for `"tf"` without
    TensorFlow."""
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}; got {pipeline!r}.")
    installed = importlib.util.find_spec("tensorflow") is not None
    if pipeline == "auto":
        return "tf" if installed else "numpy"
    if pipeline == "tf" and not installed:
        raise ImportError(
            "pipeline='tf' builds tf.data pipelines, which need TensorFlow (`pip install "
            "tensorflow`). pipeline='numpy' (the default without TensorFlow) gives the same data "
            "as a keras.utils.PyDataset."
        )
    return pipeline


def _augmentation(augment, meta: DatasetInfo, train_only: bool) -> Augmentation | None:
    if augment is None:
        return meta.augmentation if train_only else None
    if isinstance(augment, Augmentation):
        return augment
    if isinstance(augment, bool):
        return meta.augmentation if augment else None
    raise ValueError(f"augment must be None, True, False or an Augmentation; got {augment!r}.")


def _image_size(image_size, meta: DatasetInfo) -> tuple[int, int]:
    if image_size is None:
        return meta.image_shape[:2]
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int | np.integer) and s > 0 for s in size):
        raise ValueError(f"image_size must be None, an int or (height, width); got {image_size!r}.")
    return size


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
