"""`AttentionMapLogger`: the Distiller's attention maps of a fixed batch in TensorBoard."""

from __future__ import annotations

import os

import keras
import numpy as np

from keras_at._argument_checks import check_int
from keras_at.callbacks._checks import check_distiller
from keras_at.visualize import DEFAULT_CMAP, GRID_COLUMNS, pair_grid


@keras.saving.register_keras_serializable(package="keras_at")
class AttentionMapLogger(keras.callbacks.Callback):
    """Writes the Distiller's attention maps for a fixed batch to TensorBoard.

    At the end of epochs 0, n, 2n, ... (`n = every_n_epochs`, the convention
    of `keras.callbacks.TensorBoard`'s `histogram_freq`), for every pair of
    `distiller.pairs`, one image under the tag `attention/<pair>`: a grid
    whose rows are the examples and whose columns are the input image, the
    teacher's map, the student's map and the student's map overlaid on the
    image (`keras_at.visualize.pair_grid`; maps upsampled to the input size,
    colour-mapped, each min-max normalised for display; the columns are
    titled in the picture), so the IMAGES tab shows one picture per pair to
    compare student and teacher at a glance.
    With it goes a scalar `attention/<pair>/distance`: the mean squared
    difference of the l2-normalised maps, i.e. that pair's `at_loss` on this
    batch. The events go to their own writer in `<log_dir>/attention`, so the
    callback works beside `keras.callbacks.TensorBoard(log_dir)` (the maps
    appear as the run "attention").

    Args:
        log_dir: TensorBoard log directory, the same as `TensorBoard`'s.
        images: a fixed batch `(B, H, W, C)` of inputs, as the Distiller
            reads them (normalised; grayscale C=1 works).
        every_n_epochs: log every this many epochs, >= 1.
        max_images: number of images of the batch that are logged, >= 1.
        cmap: name of a matplotlib colormap for the maps.

    Example:

    ```python
    x_val, _ = next(iter(val_ds))
    callbacks = [keras.callbacks.TensorBoard("logs"),
                 keras_at.callbacks.AttentionMapLogger("logs", x_val[:8])]
    distiller.fit(train_ds, epochs=10, callbacks=callbacks)
    # tensorboard --logdir logs
    ```
    """

    # Where it writes: under MultiWorkerMirroredStrategy, workers other than the chief are
    # pointed to a private directory (keras_at.trainers.tensorflow._multi_worker.chief_only).
    writes_to = "log_dir"

    def __init__(
        self,
        log_dir,
        images,
        every_n_epochs: int = 1,
        max_images: int = 8,
        cmap: str = DEFAULT_CMAP,
    ):
        super().__init__()
        check_int(every_n_epochs, "every_n_epochs")
        check_int(max_images, "max_images")
        images = np.asarray(keras.ops.convert_to_numpy(images), dtype="float32")
        if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
            raise ValueError(
                "`images` must be a non-empty batch (B, H, W, C) with C = 1 or 3, got shape "
                f"{images.shape}."
            )
        self.log_dir = os.fspath(log_dir)
        self.images = images[:max_images]
        self.every_n_epochs = every_n_epochs
        self.max_images = max_images
        self.cmap = cmap
        self._writer = None

    def on_train_begin(self, logs=None):
        check_distiller(self, self.model)
        if not self.model.pairs:
            raise ValueError(
                "AttentionMapLogger needs activation pairs, but the Distiller has `pairs=[]`."
            )
        if self._writer is None:
            self._writer = _summary().create_file_writer(os.path.join(self.log_dir, "attention"))

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every_n_epochs == 0:
            self._write(epoch)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _write(self, step):
        maps = self.model.attention_maps(self.images)
        description = (f"Rows: the {len(self.images)} logged examples. Columns: "
                       + ", ".join(GRID_COLUMNS) + " (the student's map over the image).")
        # record_if(True): a TensorBoard callback with update_freq=N may have pushed a condition.
        summary = _summary()
        with self._writer.as_default(step=step), summary.record_if(True):
            for name, (student, teacher) in maps.items():
                tag = f"attention/{name}"
                grid = pair_grid(self.images, student, teacher, self.cmap)
                summary.image(tag, grid[None], max_outputs=1, description=description)
                summary.scalar(f"{tag}/distance", float(np.mean(np.square(student - teacher))))
        self._writer.flush()

    def get_config(self):
        return {
            "log_dir": self.log_dir,
            "images": self.images.tolist(),
            "every_n_epochs": self.every_n_epochs,
            "max_images": self.max_images,
            "cmap": self.cmap,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _summary():
    """`tf.summary`: TensorBoard's event files are written by TensorFlow, on any backend (as
    for `keras.callbacks.TensorBoard`)."""
    try:
        import tensorflow as tf
    except ImportError as error:
        raise ImportError(
            "AttentionMapLogger writes TensorBoard event files with tf.summary, which needs "
            "TensorFlow (`pip install tensorflow`, the CPU build is enough); the Distiller itself "
            f"runs on {keras.backend.backend()!r} without it."
        ) from error
    return tf.summary
