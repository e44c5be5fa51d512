"""Training data that carries each example's precomputed teacher input gradient (eq. 4).

Why and when this is exact (a frozen teacher, flips as the only augmentation), and how the
gradients are computed: `keras_at.gradient_at`. `cached_gradient_dataset` computes them with a
Distiller's teacher and builds the data; `with_teacher_gradients` builds it from given tables.
Everything is held in memory as float32, N·H·W·C·4 bytes per table: the images and one
gradient table, two with flips.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_at.data.augment import Augmentation
from keras_at.data.augment_tf import flip_if
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

    Most users call `cached_gradient_dataset`, which computes both tables first.

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

    Examples:
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


def cached_gradient_dataset(
    distiller, x, y, batch_size: int = 128, flip: bool = True, shuffle: bool = True, seed=None
) -> tf.data.Dataset:
    """Training data for gradient AT whose teacher gradients are computed once, here.

    Computes J_T of every image and, with `flip`, of every horizontally flipped image, with
    the `distiller`'s teacher and compiled loss (`Distiller.teacher_input_gradients`), then
    returns `with_teacher_gradients`: batches of `((images, teacher_gradients), labels)`,
    each image flipped with probability 1/2 per epoch when `flip`, and paired with J_T of the
    image as flipped. Exact when these flips are the only augmentation. Order and flips are
    those of `keras_at.data.load` with `augment=Augmentation(pad=0)` and the same `seed`,
    under the same global seed.

    Args:
        distiller: a compiled `keras_at.Distiller` with gradient AT on (`grad_beta` > 0).
        x: `(N, H, W, C)` floating-point images, normalised, not augmented.
        y: `(N,)` labels.
        batch_size: examples per batch, for the teacher passes and for training.
        flip: random horizontal flips (the paper's Table 3 augmentation).
        shuffle: reshuffle every epoch.
        seed: makes shuffling and flips reproducible (each epoch still differs).

    Returns:
        A `tf.data.Dataset` holding N·H·W·C·4 bytes for the images and for each of the one
        (two with `flip`) gradient tables: 1.8 GB for CIFAR-10's training set with flips.

    Example:

    ```python
    distiller = keras_at.Distiller(student, teacher, pairs=[], grad_beta=1.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    train = cached_gradient_dataset(distiller, x_train, y_train, batch_size=128, seed=0)
    distiller.fit(train, epochs=200)
    ```
    """
    if "grad_at_loss" not in distiller.active_terms:
        raise ValueError(
            "cached_gradient_dataset is for gradient AT, but grad_beta is 0 and was never on; "
            "construct the Distiller with grad_beta > 0."
        )
    x = np.asarray(x)
    gradients = distiller.teacher_input_gradients(x, y, batch_size)
    flipped = distiller.teacher_input_gradients(x[:, :, ::-1], y, batch_size) if flip else None
    return with_teacher_gradients(x, y, gradients, flipped, batch_size, shuffle, seed)
