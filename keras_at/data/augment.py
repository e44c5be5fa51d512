"""Per-example training augmentation and resizing, run inside `tf.data` before batching.

`keras.layers.RandomCrop` on a batch picks one crop for the whole batch; here every example gets
its own crop and flip, drawn by stateless `tf.image` ops from a per-example seed, so a pipeline
with a fixed `seed` is reproducible and still different from one epoch to the next.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """A dataset's standard training augmentation, applied to one image at a time.

    The default is the CIFAR recipe of the paper and the authors' code: reflect-pad 4 pixels on
    every side, crop a random window of the original size, flip horizontally with probability
    1/2. `crop_area` switches the crop to the ImageNet recipe instead (Inception-style random
    resized crop covering that fraction of the image, aspect ratio in [3/4, 4/3]), used for image
    folders. `scale_short` switches it to the CUB recipe of the paper (§4.2.1): the shorter side
    rescaled to `scale_short` times the output size (256/224: 256 for 224 crops), then a random
    window of the output size.

    Args:
        pad: pixels added on each side before the random crop; 0 disables the translation.
        pad_mode: `tf.pad` mode, `"REFLECT"` (as the authors' code), `"SYMMETRIC"` or
            `"CONSTANT"` (zeros, i.e. black before normalisation).
        flip: random horizontal flip. Off for digits, where a flip changes the class.
        crop_area: `(min, max)` area fraction of a random resized crop, or None.
        scale_short: rescale before a random crop, as above (>= 1), or None.

    Example:
        >>> aug = Augmentation(pad=2, flip=False)
        >>> aug(tf.zeros((8, 8, 1), tf.uint8), tf.constant([1, 2]), (8, 8)).shape
        TensorShape([8, 8, 1])
    """

    pad: int = 4
    pad_mode: str = "REFLECT"
    flip: bool = True
    crop_area: tuple[float, float] | None = None
    scale_short: float | None = None

    def __post_init__(self):
        if self.pad < 0:
            raise ValueError(f"Augmentation pad must be >= 0; got {self.pad}.")
        if self.pad_mode not in ("REFLECT", "SYMMETRIC", "CONSTANT"):
            raise ValueError(
                "Augmentation pad_mode must be 'REFLECT', 'SYMMETRIC' or 'CONSTANT'; "
                f"got {self.pad_mode!r}."
            )
        if self.crop_area is not None and not 0 < self.crop_area[0] <= self.crop_area[1] <= 1:
            raise ValueError(
                f"Augmentation crop_area must satisfy 0 < min <= max <= 1; got {self.crop_area}."
            )
        if self.scale_short is not None and (self.crop_area is not None or self.scale_short < 1):
            raise ValueError(
                "Augmentation scale_short must be >= 1 and exclude crop_area; got "
                f"scale_short={self.scale_short}, crop_area={self.crop_area}."
            )

    def __call__(self, image: tf.Tensor, seed: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
        """Augments one `(H, W, C)` image of any size into a `(*size, C)` image.

        `seed` is a shape-`(2,)` integer tensor; the same seed gives the same result.
        """
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        if self.crop_area is not None:
            begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
                tf.shape(image),
                bounding_boxes=tf.zeros([1, 0, 4]),
                seed=crop_seed,
                min_object_covered=0.0,
                aspect_ratio_range=(3 / 4, 4 / 3),
                area_range=self.crop_area,
                max_attempts=10,
                use_image_if_no_bounding_boxes=True,
            )
            image = resize(tf.slice(image, begin, extent), size)
        elif self.scale_short is not None:
            image = cover(image, size, self.scale_short)
            window = (*size, image.shape[-1])
            image = tf.image.stateless_random_crop(image, window, seed=crop_seed)
        else:
            image = resize(image, size)
            if self.pad:
                p = self.pad
                padded = tf.pad(image, [[p, p], [p, p], [0, 0]], mode=self.pad_mode)
                image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
        if self.flip:
            image = flip_if(_flip_draw(flip_seed), image)
        return image

    def flips(self, seed: tf.Tensor) -> tf.Tensor:
        """Whether `__call__` with this per-example `seed` flips the image: a bool scalar.

        The draw of `tf.image.stateless_random_flip_left_right`, made here so that what travels
        with an image (its precomputed teacher input gradient) can follow the same flip.
        """
        if not self.flip:
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


# Single-crop evaluation of ImageNet models (fb.resnet.torch, the authors' imagenet.py): the
# shorter side to 256, then the central 224x224 window; for other sizes, in proportion.
EVAL_SCALE = 256 / 224


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
