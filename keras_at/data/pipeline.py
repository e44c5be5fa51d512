"""`load()`: a named dataset or an image folder as a batched, normalised `tf.data.Dataset`."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from keras_at._multi_worker import by_file, in_multi_worker_mode
from keras_at._validate import check_int
from keras_at.data import catalog, cub, folders, sources, splits
from keras_at.data.augment import Augmentation, centre_crop, resize
from keras_at.data.catalog import DatasetInfo
from keras_at.data.sharding import worker_batches

AUTOTUNE = tf.data.AUTOTUNE


def info(name: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> DatasetInfo:
    """Metadata of a dataset: classes, native image shape, normalisation, augmentation.

    Named datasets need no files for this. An image folder (`name` a path, or a folder name
    inside `data_dir`) is scanned for its class sub-folders; a CUB-200-2011 folder (one holding
    `images.txt`, see `keras_at.data.cub`) is read from `classes.txt`.

    Example:
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
) -> tf.data.Dataset:
    """A batched, prefetched `tf.data.Dataset` of `(float32 images (B, H, W, C), int32 labels)`.

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
        seed: makes shuffling and augmentation reproducible (each epoch still differs).
        limit: keep the first `limit` examples of the split, in source order, before shuffling.
        image_size: `(height, width)` or an int for square images; None keeps the native size
            (image folders and CUB: 224x224).

    Returns:
        A `tf.data.Dataset` with known cardinality (number of batches).

    Raises:
        ValueError: unknown name, bad split or argument, corrupt file (named in the message).
        FileNotFoundError: the data is nowhere on disk and cannot be downloaded; the message
            lists every place searched.

    Example:
        >>> train = load("digits", "train[:90%]", batch_size=64, seed=0)
        >>> val = load("digits", "train[90%:]", augment=False, shuffle=False)
        >>> images, labels = next(iter(train))
        >>> images.shape, labels.shape
        (TensorShape([64, 32, 32, 1]), TensorShape([64]))
    """
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
        _check_nonempty(labels, where)
        return from_arrays(
            images, labels, batch_size, augmentation, shuffle, seed, meta.mean, meta.std, size
        )

    source = cub if cub.is_cub(meta.name) else folders
    names = dict.fromkeys(part.name for part in parts)  # checked by source.files
    listed = {s: source.files(meta.name, s, meta.class_names) for s in names}
    chosen = splits.select(parts, {s: len(labels) for s, (_, labels) in listed.items()})
    paths = [p for s, positions in chosen for p in listed[s][0][positions]][:limit]
    labels = _concat([listed[s][1][positions] for s, positions in chosen])[:limit]
    _check_nonempty(labels, where)
    paths, labels = folders.drop_undecodable(paths, labels, meta.name)
    table = tf.constant(paths)
    read = (
        cub.reader(meta.name, paths)
        if source is cub
        else lambda i: folders.decode(tf.io.read_file(table[i]))
    )
    return _pipeline(
        read,
        labels,
        batch_size,
        augmentation,
        shuffle,
        seed,
        meta.mean,
        meta.std,
        size,
        meta.eval_scale,
        files=True,
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
) -> tf.data.Dataset:
    """The `load()` pipeline for in-memory uint8 images `(N, H, W, C)` (values 0..255).

    `mean`/`std` are per channel on the [0, 1] scale; None computes them from `images`.

    Example:
        >>> x = np.zeros((10, 8, 8, 3), np.uint8)
        >>> data = from_arrays(x, np.arange(10), 4, mean=(0.5,) * 3, std=(0.25,) * 3)
        >>> images, labels = next(iter(data))
        >>> images.shape, float(images[0, 0, 0, 0])
        (TensorShape([4, 8, 8, 3]), -2.0)
    """
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
    table = tf.constant(images)
    size = images.shape[1:3] if image_size is None else image_size
    return _pipeline(
        lambda i: tf.gather(table, i),
        labels,
        batch_size,
        augmentation,
        shuffle,
        seed,
        mean,
        std,
        size,
    )


def _pipeline(
    read: Callable[[tf.Tensor], tf.Tensor],
    labels: np.ndarray,
    batch_size: int,
    augmentation: Augmentation | None,
    shuffle: bool,
    seed: int | None,
    mean: Sequence[float],
    std: Sequence[float],
    size: tuple[int, int],
    eval_scale: float | None = None,
    files: bool = False,
) -> tf.data.Dataset:
    """Indices -> (shuffle) -> per-example read + augment -> batch -> normalise -> prefetch.

    Without augmentation an image is resized to `size`, or, with `eval_scale`, centre-cropped
    (`augment.centre_crop`). With `files`, the dataset also carries its per-worker form for
    MultiWorkerMirroredStrategy (`keras_at._multi_worker.by_file`).
    """
    check_batch_size(batch_size)
    if shuffle and seed is None and in_multi_worker_mode():
        # Each worker keeps its share of one order: the orders must be the same everywhere.
        raise ValueError("Under MultiWorkerMirroredStrategy a shuffled pipeline needs `seed=`, "
                         "the same on every worker; got seed=None.")
    size = tuple(int(s) for s in size)
    label_table = tf.constant(np.asarray(labels, np.int32))
    data = example_indices(len(labels), shuffle, seed, augmented=augmentation is not None)
    if augmentation is None:

        def example(i):
            if eval_scale is None:
                return resize(read(i), size), label_table[i]
            return centre_crop(read(i), size, eval_scale), label_table[i]

    else:

        def example(i, example_seed):
            return augmentation(read(i), example_seed, size), label_table[i]

    shift = tf.constant(np.multiply(mean, 255.0), tf.float32)
    scale = tf.constant(np.multiply(std, 255.0), tf.float32)

    def normalise(images, batch_labels):
        return (tf.cast(images, tf.float32) - shift) / scale, batch_labels

    def finish(batches, policy):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = policy
        batches = batches.map(normalise, num_parallel_calls=AUTOTUNE)
        return batches.prefetch(AUTOTUNE).with_options(options)

    # Under MultiWorkerMirroredStrategy each worker keeps its share of every batch (global
    # batch = batch_size). The source is an index range, not files, so by-file sharding
    # (AUTO's first try) cannot apply: sharding by data is said outright.
    policy = tf.data.experimental.AutoShardPolicy
    dataset = finish(data.map(example, num_parallel_calls=AUTOTUNE).batch(batch_size), policy.DATA)
    if not files:
        return dataset
    # Files: the Distiller reads them by worker instead, each worker decoding only its pieces
    # of the same global batches (`keras_at.data.sharding`).
    return by_file(
        dataset,
        lambda context: finish(
            worker_batches(data, batch_size, context, example, dataset.element_spec), policy.OFF
        ),
    )


def example_indices(
    count: int, shuffle: bool, seed: int | None, augmented: bool
) -> tf.data.Dataset:
    """Example indices, reshuffled every epoch when `shuffle`, with one seed each if `augmented`.

    Each seed is a stateless `(2,)` seed for that example's augmentation: reproducible from
    `seed`, new in every epoch. `load()` and `with_teacher_gradients` both start here, so the
    same `seed` (and global seed, which `tf.data` reads too) gives them the same order and draws.
    """
    data = tf.data.Dataset.range(count)
    if shuffle:
        data = data.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    if not augmented:
        return data
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(data, seeds)


def check_batch_size(batch_size) -> int:
    """`batch_size` as an int, or a `ValueError` (an integer >= 1)."""
    return check_int(batch_size, "batch_size")


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


def _check_nonempty(labels: np.ndarray, where: str) -> None:
    if len(labels) == 0:
        raise ValueError(f"{where} selects no examples.")
