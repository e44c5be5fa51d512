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
    folders.

    Args:
        pad: pixels added on each side before the random crop; 0 disables the translation.
        pad_mode: `tf.pad` mode, `"REFLECT"` (as the authors' code), `"SYMMETRIC"` or
            `"CONSTANT"` (zeros, i.e. black before normalisation).
        flip: random horizontal flip. Off for digits, where a flip changes the class.
        crop_area: `(min, max)` area fraction of a random resized crop, or None.

    Example:
        >>> aug = Augmentation(pad=2, flip=False)
        >>> aug(tf.zeros((8, 8, 1), tf.uint8), tf.constant([1, 2]), (8, 8)).shape
        TensorShape([8, 8, 1])
    """

    pad: int = 4
    pad_mode: str = "REFLECT"
    flip: bool = True
    crop_area: tuple[float, float] | None = None

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
