"""BackupAndRestore that resumes a mid-epoch backup exactly, with an atomic metadata file."""

from __future__ import annotations

import json
import os
import shutil

import keras

from keras_at.saving import write_text_atomically


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` whose mid-epoch resume skips the batches already done.

    Keras 3's callback, with `save_freq=N` steps, restores the weights of the
    last backup (taken after batch `b` of epoch `e`) but reruns epoch `e` from
    its first batch, so batches `0..b` train the student a second time. This
    one reads those batches from the data without a step, so the resumed run
    goes on from batch `b + 1` and, with a data order that does not depend on
    the process (`shuffle=False`, or a seeded dataset), ends with the weights
    of the uninterrupted run. Either callback restores a Distiller's loss
    weights and schedules exactly (`keras_at.callbacks.BetaScheduler`).

    The weights are written by the Distiller's atomic `save_weights`; the
    `training_metadata.json` beside them is written after them, atomically
    too, so a kill at any point leaves a readable backup.

    Args: as `keras.callbacks.BackupAndRestore` (`backup_dir`, `save_freq`,
        `double_checkpoint`, `delete_checkpoint`).

    Example:

    ```python
    backup = keras_at.callbacks.BackupAndRestore("backup", save_freq=100)
    distiller.fit(x, y, epochs=10, shuffle=False, callbacks=[backup])  # rerun after a kill
    ```
    """

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._skip_epoch, self._skip_through, self._real_step = None, -1, None
        if isinstance(self.save_freq, int) and os.path.exists(self._training_metadata_path):
            with open(self._training_metadata_path) as f:
                metadata = json.load(f)
            # Saved after batch `batch` (counted from 0) of `epoch`, which Keras reruns.
            self._skip_epoch, self._skip_through = metadata["epoch"], metadata["batch"]

    def on_epoch_begin(self, epoch, logs=None):
        # Keras sets it at epoch ends only: a resumed run's first backups would say epoch 0.
        self._current_epoch = epoch
        if epoch != self._skip_epoch:
            self._skip_through = -1

    def on_train_batch_begin(self, batch, logs=None):
        # `self._model`, not `self.model`, unless a step is swapped: on JAX, reading
        # `self.model` copies the training state into the variables.
        if batch <= self._skip_through:
            model = self.model
            if self._real_step is None:
                self._real_step = model.train_function
                model.train_function = self._skip_step
        elif self._real_step is not None:
            self._model.train_function, self._real_step = self._real_step, None

    def on_train_end(self, logs=None):
        if self._real_step is not None:
            self.model.train_function, self._real_step = self._real_step, None
        super().on_train_end(logs)

    def _skip_step(self, *args):
        """A step that reads its batches and trains on none: `(iterator)` on TensorFlow,
        `(state, iterator)` on JAX, which takes the unchanged state back."""
        for _ in range(self._model.steps_per_execution):
            next(args[-1])
        return {} if len(args) == 1 else ({}, args[0])

    def _save_model(self):
        if "://" in str(self.backup_dir):  # remote: Keras's own writes
            return super()._save_model()
        os.makedirs(self.backup_dir, exist_ok=True)
        if self.double_checkpoint:
            for path, previous in ((self._weights_path, self._prev_weights_path),
                                   (self._training_metadata_path,
                                    self._prev_training_metadata_path)):
                if os.path.exists(path):
                    shutil.copyfile(path, previous)
        # Weights first, then the metadata, as Keras does; each replaces its file atomically.
        self.model.save_weights(filepath=self._weights_path, overwrite=True)
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
        write_text_atomically(self._training_metadata_path, json.dumps(metadata))
