"""Training data that carries each example's precomputed teacher input gradient (eq. 4).

Why and when this is exact (a frozen teacher, flips as the only augmentation), and how the
gradients are computed: `keras_at.gradient_cache`. Everything is held in memory as float32,
N·H·W·C·4 bytes per table: the images and one gradient table, two with flips.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_at.data.augment import Augmentation, flip_if
from keras_at.data.pipeline import AUTOTUNE, check_batch_size, example_indices


def with_teacher_gradients(
    images: np.ndarray,
    labels: np.ndarray,
    gradients: np.ndarray,
    flipped_gradients: np.ndarray | None = None,
    batch_size: int = 128,
    shuffle: bool = True,
    seed: int | None = None,
) -> tf.data.Dataset:
    """A batched `tf.data.Dataset` of `((images, teacher_gradients), labels)` for a Distiller.

    Each example comes with its own precomputed teacher input gradient, which the
    `Distiller`'s step then uses instead of running the teacher's forward and backward pass.
    With `flipped_gradients`, each example is flipped horizontally with probability 1/2, drawn
    per example and per epoch, and a flipped image comes with its entry of
    `flipped_gradients`: the teacher's gradient at the flipped image. Order and flips are those
    of `load()` with `Augmentation(pad=0)` (flips only) and the same `seed` (and global seed:
    `tf.data` combines both).

    Most users call `Distiller.cached_gradient_dataset`, which computes both tables first.

    Args:
        images: `(N, H, W, C)` floating-point images, normalised as the networks see them.
        labels: `(N,)` labels.
        gradients: `(N, H, W, C)` teacher input gradients at `images`.
        flipped_gradients: `(N, H, W, C)` teacher input gradients at `images[:, :, ::-1]`, in
            the flipped image's own coordinates; None for no flips.
        batch_size: examples per batch; the last batch may be smaller.
        shuffle: reshuffle every epoch.
        seed: makes shuffling and flips reproducible (each epoch still differs).

    Returns:
        A `tf.data.Dataset` with known cardinality. Memory: N·H·W·C·4 bytes for the images and
        for each gradient table.

    Example:
        >>> x = np.random.rand(10, 8, 8, 3).astype("float32")
        >>> j, j_flip = np.ones_like(x), -np.ones_like(x)
        >>> data = with_teacher_gradients(x, np.arange(10), j, j_flip, batch_size=4, seed=0)
        >>> (images, gradients), labels = next(iter(data))
        >>> images.shape, gradients.shape
        (TensorShape([4, 8, 8, 3]), TensorShape([4, 8, 8, 3]))
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.dtype.kind != "f" or len(labels) != len(images):
        raise ValueError(
            "with_teacher_gradients expects floating-point images (N, H, W, C), normalised as "
            f"the networks see them, and N labels; got {images.dtype} images of shape "
            f"{images.shape} and labels of shape {labels.shape}."
        )
    tables = {"gradients": gradients, "flipped_gradients": flipped_gradients}
    for name, table in tables.items():
        if table is not None and np.shape(table) != images.shape:
            raise ValueError(
                f"`{name}` of shape {np.shape(table)} do not match the images' shape "
                f"{images.shape}: each image needs its own teacher gradient."
            )
    check_batch_size(batch_size)
    image_table = tf.constant(images, tf.float32)
    label_table = tf.constant(labels)
    gradient_table = tf.constant(gradients, tf.float32)
    flip = flipped_gradients is not None
    data = example_indices(len(labels), shuffle, seed, augmented=flip)
    if not flip:

        def example(i):
            return (image_table[i], gradient_table[i]), label_table[i]

    else:
        flips = Augmentation(pad=0, flip=True)
        flipped_table = tf.constant(flipped_gradients, tf.float32)

        def example(i, example_seed):
            # One draw decides both: the image as `flips` would show it, and its gradient.
            flipped = flips.flips(example_seed)
            image = flip_if(flipped, image_table[i])
            gradient = tf.cond(flipped, lambda: flipped_table[i], lambda: gradient_table[i])
            return (image, gradient), label_table[i]

    return data.map(example, num_parallel_calls=AUTOTUNE).batch(batch_size).prefetch(AUTOTUNE)
