"""`Augmentation` and resizing in TensorFlow, run inside `tf.data` before batching.

Crops and flips are drawn by stateless `tf.image` ops from each example's seed.
"""

from __future__ import annotations

import tensorflow as tf

from keras_at.data.augment import EVAL_SCALE, Augmentation


def augment(
    augmentation: Augmentation, image: tf.Tensor, seed: tf.Tensor, size: tuple[int, int]
) -> tf.Tensor:
    """`augmentation` applied to one `(H, W, C)` image, giving a `(*size, C)` image
    (`Augmentation.__call__`)."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if augmentation.crop_area is not None:
        begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image),
            bounding_boxes=tf.zeros([1, 0, 4]),
            seed=crop_seed,
            min_object_covered=0.0,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=augmentation.crop_area,
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        image = resize(tf.slice(image, begin, extent), size)
    elif augmentation.scale_short is not None:
        image = cover(image, size, augmentation.scale_short)
        window = (*size, image.shape[-1])
        image = tf.image.stateless_random_crop(image, window, seed=crop_seed)
    else:
        image = resize(image, size)
        if augmentation.pad:
            p = augmentation.pad
            padded = tf.pad(image, [[p, p], [p, p], [0, 0]], mode=augmentation.pad_mode)
            image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
    if augmentation.flip:
        image = flip_if(_flip_draw(flip_seed), image)
    return image


def flips(augmentation: Augmentation, seed: tf.Tensor) -> tf.Tensor:
    """Whether `augment` with this per-example `seed` flips the image (`Augmentation.flips`)."""
    if not augmentation.flip:
        return tf.constant(False)
    _, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    return _flip_draw(flip_seed)


def _flip_draw(flip_seed: tf.Tensor) -> tf.Tensor:
    return tf.random.stateless_uniform([], flip_seed) < 0.5


def flip_if(flipped: tf.Tensor, image: tf.Tensor) -> tf.Tensor:
    """`image` (H, W, C) mirrored left-right where the bool scalar `flipped` is true."""
    return tf.cond(flipped, lambda: tf.reverse(image, [1]), lambda: image)


def resize(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Bilinear resize of one image to `size` (antialiased when shrinking); a no-op when the
    static size already matches, so native-size datasets keep their exact uint8 pixels."""
    if tuple(image.shape[:2]) == tuple(size):
        return image
    image = tf.image.resize(image, size, method="bilinear", antialias=True)
    return tf.ensure_shape(image, (*size, image.shape[-1]))


def cover(image: tf.Tensor, size: tuple[int, int], scale: float) -> tf.Tensor:
    """Resizes one image, keeping its aspect ratio, to cover `scale * size`.

    For a square `size` this sets the shorter side to `round(scale * size)` (256 for 224 at
    `scale=256/224`); the longer side follows the aspect ratio, rounded.
    """
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    target = tf.constant([round(scale * s) for s in size], tf.float32)
    factor = tf.reduce_max(target / shape)
    new = tf.maximum(tf.cast(tf.round(shape * factor), tf.int32), tf.cast(target, tf.int32))
    return tf.image.resize(image, new, method="bilinear", antialias=True)


def centre_crop(image: tf.Tensor, size: tuple[int, int], scale: float = EVAL_SCALE) -> tf.Tensor:
    """Single-crop evaluation: `cover(image, size, scale)`, then the central `size` window.

    Example:
        >>> centre_crop(tf.zeros((200, 300, 3)), (224, 224)).shape  # via 256x384
        TensorShape([224, 224, 3])
    """
    image = cover(image, size, scale)
    shape = tf.shape(image)
    top, left = (shape[0] - size[0]) // 2, (shape[1] - size[1]) // 2
    image = tf.image.crop_to_bounding_box(image, top, left, size[0], size[1])
    return tf.ensure_shape(image, (*size, image.shape[-1]))
