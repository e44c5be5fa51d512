"""`Augmentation` (pad, crop, flip) and resizing on numpy batches, for `ArrayDataset`.

The draws follow the distributions of `keras_at.data.augment_tf`: a crop offset uniform in
`[0, 2 * pad]` on each axis (as `tf.image.stateless_random_crop`) and a flip with probability
1/2, independently per example. Resizing uses the weights of `tf.image.resize(...,
"bilinear", antialias=True)`, which for enlarging are those of plain bilinear resizing.
"""

from __future__ import annotations

import numpy as np

from keras_at.data.augment import Augmentation

_PAD_MODES = {"REFLECT": "reflect", "SYMMETRIC": "symmetric", "CONSTANT": "constant"}


def check(augmentation: Augmentation) -> Augmentation:
    """`augmentation`, or a `ValueError` where it is a recipe this module cannot apply."""
    if augmentation.crop_area is not None or augmentation.scale_short is not None:
        raise ValueError(
            "The numpy pipeline applies the pad-crop-flip Augmentation only; "
            f"{augmentation} needs the tf.data pipeline (pipeline='tf', with TensorFlow)."
        )
    return augmentation


def draw(
    augmentation: Augmentation, rng: np.random.Generator, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Crop offsets `(count, 2)` (rows, columns) and flips `(count,)` for `count` examples."""
    offsets = rng.integers(0, 2 * augmentation.pad + 1, size=(count, 2))
    flips = rng.random(count) < 0.5 if augmentation.flip else np.zeros(count, bool)
    return offsets, flips


def crop_and_flip(
    images: np.ndarray, offsets: np.ndarray, flips: np.ndarray, augmentation: Augmentation
) -> np.ndarray:
    """Each of `images` (N, H, W, C) padded, cropped at its offset back to (H, W), and flipped
    left-right where `flips` says."""
    height, width = images.shape[1:3]
    p = augmentation.pad
    padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), _PAD_MODES[augmentation.pad_mode])
    out = np.empty_like(images)
    # A copy of each example's window: several times faster than one gather of all pixels.
    for k, ((top, left), flip) in enumerate(zip(offsets, flips, strict=True)):
        window = padded[k, top : top + height, left : left + width]
        out[k] = window[:, ::-1] if flip else window
    return out


def resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Images (N, H, W, C) resized bilinearly to `size` (antialiased when shrinking), as
    float32; returned unchanged when they have that size already, as `augment_tf.resize`."""
    height, width = images.shape[1:3]
    if (height, width) == tuple(size):
        return images
    rows, columns = _resize_weights(height, size[0]), _resize_weights(width, size[1])
    out = np.einsum("oh,nhwc->nowc", rows, images.astype(np.float64), optimize=True)
    return np.einsum("pw,nowc->nopc", columns, out, optimize=True).astype(np.float32)


def _resize_weights(length: int, new_length: int) -> np.ndarray:
    """`(new_length, length)` weights of a triangle filter, as `tf.image.resize`'s
    scale-and-translate kernel: pixel centres at `i + 0.5`, the filter widened by the
    shrinking factor, each row normalised to sum to 1 (which clamps at the edges)."""
    scale = new_length / length
    width = max(1.0, 1.0 / scale)
    centres = (np.arange(new_length) + 0.5) / scale
    distance = np.abs(np.arange(length) + 0.5 - centres[:, None]) / width
    weights = np.maximum(0.0, 1.0 - distance)
    return weights / weights.sum(axis=1, keepdims=True)
