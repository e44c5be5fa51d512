"""`load()`'s numpy pipeline: in-memory images as a `keras.utils.PyDataset`, no TensorFlow.

The same examples, normalisation and augmentation recipe as the `tf.data` pipeline
(`keras_at.data.pipeline`), drawn by numpy (`keras_at.data.augment_numpy`), so that `fit` on
JAX (or any backend) is fed where TensorFlow is not installed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import keras
import numpy as np

from keras_at.data import augment_numpy
from keras_at.data.augment import Augmentation
from keras_at.data.loader import check_batch_size


class ArrayDataset(keras.utils.PyDataset):
    """Batches of `(float32 images (B, H, W, C), int32 labels)` from in-memory images.

    What `keras_at.data.load(..., pipeline="numpy")` and `from_arrays(..., pipeline="numpy")`
    return. Each batch is read, resized to `image_size` if needed, augmented per example
    (reflect-pad, random crop, flip: the `Augmentation`), then normalised with `mean` and
    `std`. An epoch is one pass over the examples, shuffled when `shuffle`; every epoch has its
    own order and draws, fixed by `seed` and the epoch's number alone, so a seed reproduces a
    run whatever the number of workers. `fit` starts the next epoch by calling `on_epoch_end`
    (use it without `steps_per_epoch`, so that its epochs are passes); iterating over the
    dataset (`for images, labels in data`) is an epoch too, the next iteration the next one,
    as with a `tf.data.Dataset`.

    Batches are made in the calling thread by default. `workers` (threads, or processes with
    `use_multiprocessing=True`) make them ahead of the training step, which helps where the
    step is fast (an accelerator); set them here or later as attributes
    (`data.workers = 4`): see `docs/data_pipeline_jax.md` for measurements.

    Args:
        images: `(N, H, W, C)` images, uint8 values 0..255 (any real dtype is cast).
        labels: `N` integer labels.
        batch_size: examples per batch; the last batch may be smaller.
        augmentation: the pad-crop-flip `Augmentation`, or None.
        shuffle: a new order every epoch.
        seed: the seed of orders and draws; None draws one from numpy's global generator
            (which `keras.utils.set_random_seed` seeds).
        mean: per-channel mean on the [0, 1] scale: images are `(x / 255 - mean) / std`.
        std: per-channel standard deviation on the [0, 1] scale.
        image_size: `(height, width)` of the batches; None keeps the images' size.
        workers: `keras.utils.PyDataset`'s.
        use_multiprocessing: `keras.utils.PyDataset`'s.
        max_queue_size: `keras.utils.PyDataset`'s.

    Examples:
        >>> x = np.zeros((10, 8, 8, 3), np.uint8)
        >>> data = ArrayDataset(x, np.arange(10), 4, mean=(0.5,) * 3, std=(0.25,) * 3)
        >>> len(data), data[0][0].shape, float(data[0][0][0, 0, 0, 0])
        (3, (4, 8, 8, 3), -2.0)
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int = 128,
        augmentation: Augmentation | None = None,
        shuffle: bool = False,
        seed: int | None = None,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        image_size: tuple[int, int] | None = None,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 10,
    ):
        super().__init__(
            workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size
        )
        self.images, self.labels = np.asarray(images), np.asarray(labels, np.int32)
        if self.images.ndim != 4 or len(self.images) != len(self.labels):
            raise ValueError(
                f"ArrayDataset expects images (N, H, W, C) and N labels; got "
                f"{self.images.shape} and {self.labels.shape}."
            )
        if len(self.labels) == 0:
            raise ValueError("ArrayDataset needs at least one example; got 0.")
        self.batch_size = check_batch_size(batch_size)
        self.augmentation = None if augmentation is None else augment_numpy.check(augmentation)
        self.shuffle = bool(shuffle)
        self.seed = int(np.random.randint(2**31)) if seed is None else int(seed)
        self.image_size = tuple(
            int(s) for s in (self.images.shape[1:3] if image_size is None else image_size)
        )
        channels = self.images.shape[-1]
        for name, value in (("mean", mean), ("std", std)):
            if np.ndim(value) != 1 or len(value) not in (1, channels):
                raise ValueError(
                    f"ArrayDataset {name} must hold one value, or one per channel "
                    f"({channels}); got {value!r}."
                )
        self._shift = np.asarray(np.multiply(mean, 255.0), np.float32)
        self._scale = np.asarray(np.multiply(std, 255.0), np.float32)
        self._epoch = 0
        self._plans: tuple[int, tuple] | None = None

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch `index` of the current epoch."""
        return self._batch(index, self._epoch)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The batches of one epoch; the next iteration (or `fit`) gets the next epoch."""
        epoch = self._epoch
        self.on_epoch_end()
        return (self._batch(index, epoch) for index in range(len(self)))

    def on_epoch_end(self) -> None:
        """Starts the next epoch: a new order (when shuffling) and new draws."""
        self._epoch += 1

    def _batch(self, index: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"ArrayDataset has {len(self)} batches; batch {index} asked for.")
        order, draws = self._plan(epoch)
        positions = slice(index * self.batch_size, (index + 1) * self.batch_size)
        chosen = order[positions]
        images = augment_numpy.resize(self.images[chosen], self.image_size)
        if self.augmentation is not None:
            offsets, flips = draws
            images = augment_numpy.crop_and_flip(
                images, offsets[positions], flips[positions], self.augmentation
            )
        images = images.astype(np.float32)
        images -= self._shift  # in place: no second float32 batch to allocate and fill
        images /= self._scale
        return images, self.labels[chosen]

    def _plan(self, epoch: int) -> tuple[np.ndarray, tuple | None]:
        """The example order and the augmentation draws (by position in that order) of
        `epoch`: a function of `seed` and `epoch`, computed once per epoch."""
        plans = self._plans  # one read: worker threads may replace it meanwhile
        if plans is not None and plans[0] == epoch:
            return plans[1]
        rng = np.random.default_rng([self.seed % 2**64, epoch])  # numpy's seeds are >= 0
        count = len(self.labels)
        order = rng.permutation(count) if self.shuffle else np.arange(count)
        draws = None
        if self.augmentation is not None:
            draws = augment_numpy.draw(self.augmentation, rng, count)
        self._plans = (epoch, (order, draws))
        return order, draws
