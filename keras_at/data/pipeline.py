"""`load()`'s `tf.data` pipelines: in-memory arrays and image files.

`keras_at.data.loader` picks this pipeline or the numpy one and calls `arrays_dataset` or
`files_dataset`; `load`, `info` and `from_arrays` are importable from here as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from keras_at.data import cub, folders, splits
from keras_at.data.augment import Augmentation
from keras_at.data.augment_tf import centre_crop, resize
from keras_at.data.catalog import DatasetInfo
from keras_at.data.loader import check_batch_size, check_nonempty, from_arrays, info, load
from keras_at.data.sharding import worker_batches
from keras_at.trainers.tensorflow._multi_worker import by_file, in_multi_worker_mode

__all__ = ["arrays_dataset", "files_dataset", "example_indices", "from_arrays", "info", "load"]

AUTOTUNE = tf.data.AUTOTUNE


def arrays_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    augmentation: Augmentation | None,
    shuffle: bool,
    seed: int | None,
    mean: Sequence[float],
    std: Sequence[float],
    size: tuple[int, int],
) -> tf.data.Dataset:
    """`from_arrays`' `tf.data` pipeline, its arguments checked."""
    table = tf.constant(images)
    return _pipeline(
        lambda i: tf.gather(table, i), labels, batch_size, augmentation, shuffle, seed, mean,
        std, size,
    )


def files_dataset(
    meta: DatasetInfo,
    parts: list[splits.SplitPart],
    batch_size: int,
    augmentation: Augmentation | None,
    shuffle: bool,
    seed: int | None,
    limit: int | None,
    size: tuple[int, int],
    where: str,
) -> tf.data.Dataset:
    """`load()`'s pipeline for an image folder or a CUB folder, its arguments checked."""
    source = cub if cub.is_cub(meta.name) else folders
    names = dict.fromkeys(part.name for part in parts)  # checked by source.files
    listed = {s: source.files(meta.name, s, meta.class_names) for s in names}
    chosen = splits.select(parts, {s: len(labels) for s, (_, labels) in listed.items()})
    paths = [p for s, positions in chosen for p in listed[s][0][positions]][:limit]
    labels = np.concatenate([listed[s][1][positions] for s, positions in chosen])[:limit]
    check_nonempty(labels, where)
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
    (`augment_tf.centre_crop`). With `files`, the dataset also carries its per-worker form for
    MultiWorkerMirroredStrategy (`keras_at.trainers.tensorflow._multi_worker.by_file`).
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
