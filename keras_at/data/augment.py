"""Per-example training augmentation: the recipe, shared by the `tf.data` and numpy pipelines.

`keras.layers.RandomCrop` on a batch picks one crop for the whole batch; here every example gets
its own crop and flip, drawn from a per-example seed, so a pipeline with a fixed `seed` is
reproducible and still different from one epoch to the next. This module holds the recipe
(`Augmentation`) and needs no TensorFlow; `keras_at.data.augment_tf` applies it inside
`tf.data`, `keras_at.data.augment_numpy` to numpy batches (`ArrayDataset`).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorflow as tf

# Single-crop evaluation of ImageNet models (fb.resnet.torch, the authors' imagenet.py): the
# shorter side to 256, then the central 224x224 window; for other sizes, in proportion.
EVAL_SCALE = 256 / 224


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """A dataset's standard training augmentation, applied to one image at a time.

    The default is the CIFAR recipe of the paper and the authors' code: reflect-pad 4 pixels on
    every side, crop a random window of the original size, flip horizontally with probability
    1/2. `crop_area` switches the crop to the ImageNet recipe instead (Inception-style random
    resized crop covering that fraction of the image, aspect ratio in [3/4, 4/3]), used for image
    folders. `scale_short` switches it to the CUB recipe of the paper (§4.2.1): the shorter side
    rescaled to `scale_short` times the output size (256/224: 256 for 224 crops), then a random
    window of the output size. Both pipelines of `keras_at.data.load` apply the pad-crop-flip
    recipe; `crop_area` and `scale_short` are applied by its `tf.data` pipeline only.

    Args:
        pad: pixels added on each side before the random crop; 0 disables the translation.
        pad_mode: `tf.pad` mode, `"REFLECT"` (as the authors' code), `"SYMMETRIC"` or
            `"CONSTANT"` (zeros, i.e. black before normalisation).
        flip: random horizontal flip. Off for digits, where a flip changes the class.
        crop_area: `(min, max)` area fraction of a random resized crop, or None.
        scale_short: rescale before a random crop, as above (>= 1), or None.

    Examples:
        >>> import tensorflow as tf
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
        """Augments one `(H, W, C)` image of any size into a `(*size, C)` image, in TensorFlow.

        `seed` is a shape-`(2,)` integer tensor; the same seed gives the same result.
        """
        from keras_at.data import augment_tf

        return augment_tf.augment(self, image, seed, size)

    def flips(self, seed: tf.Tensor) -> tf.Tensor:
        """Whether `__call__` with this per-example `seed` flips the image: a bool scalar.

        The draw of `tf.image.stateless_random_flip_left_right`, made here so that what travels
        with an image (its precomputed teacher input gradient) can follow the same flip.
        """
        from keras_at.data import augment_tf

        return augment_tf.flips(self, seed)


# The TensorFlow image functions this module held before `augment_tf`, at their old names.
_MOVED = ("centre_crop", "cover", "flip_if", "resize")


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module("keras_at.data.augment_tf"), name)
    raise AttributeError(f"module 'keras_at.data.augment' has no attribute {name!r}")
