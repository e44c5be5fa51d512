"""BackupAndRestore that resumes mid-epoch exactly, its position inside the weights file."""

from __future__ import annotations

import json
import os
import shutil
import warnings

import h5py
import keras

from keras_at.distiller import Distiller
from keras_at.saving import replacing, write_text_atomically

# The root attribute of the backup's weights file that holds the position it was taken at.
POSITION_KEY = "keras_at_backup_position"


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` whose mid-epoch resume skips the examples already done.

    Keras 3's callback, with `save_freq=N` steps, restores the weights of the
    last backup (taken after batch `b` of epoch `e`) but reruns epoch `e` from
    its first batch, so batches `0..b` train the student a second time. This
    one reads those batches from the data without a step, so the resumed run
    goes on from the next example and, with a data order that does not depend
    on the process (`shuffle=False`, or a seeded dataset), ends with the
    weights of the uninterrupted run. Either callback restores a Distiller's
    loss weights and schedules exactly (`keras_at.callbacks.BetaScheduler`).

    The backup's position (epoch, batches and examples done in it, batch size,
    steps per epoch) is written inside its weights file, which replaces the
    previous one atomically: a kill at any point leaves weights and position
    that belong together. (`training_metadata.json` is still written after it,
    for `keras.callbacks.BackupAndRestore`; backups that hold no position
    resume from it.) A rerun with another batch size resumes after the same
    number of examples, with a warning that names both sizes, when that number
    is a whole number of the new batches; otherwise, and when the data's length
    changed (other steps per epoch at the same batch size), it raises a
    `ValueError` before training a step, naming the saved and new values.
    Example counts are recorded for Keras's own training step and the
    Distiller's; with another `train_step`, a resume with other steps per epoch
    is refused.

    It takes the arguments of `keras.callbacks.BackupAndRestore` (`backup_dir`,
    `save_freq`, `double_checkpoint`, `delete_checkpoint`).

    Example:

    ```python
    backup = keras_at.callbacks.BackupAndRestore("backup", save_freq=100)
    distiller.fit(x, y, epochs=10, shuffle=False, callbacks=[backup])  # rerun after a kill
    ```
    """

    def on_train_begin(self, logs=None):
        self._position, self._skip_to, self._real_step, self._batch_size = None, None, None, None
        self._skipped_steps, self._skipped_examples, self._skip_call = 0, 0, False
        super().on_train_begin(logs)

    def _load_model(self):
        super()._load_model()  # the weights, and the epoch of training_metadata.json
        self._position = self._read_position()
        if self._position is not None:
            self.model._initial_epoch = self._position["epoch"]

    def _read_position(self):
        if "://" in str(self.backup_dir) or not os.path.exists(self._weights_path):
            return None
        with h5py.File(self._weights_path, "r") as f:
            recorded = f.attrs.get(POSITION_KEY)
        if recorded is not None:
            return json.loads(recorded)
        # A backup from before the position moved into the weights file.
        if isinstance(self.save_freq, int) and os.path.exists(self._training_metadata_path):
            with open(self._training_metadata_path) as f:
                metadata = json.load(f)
            # Saved after batch `batch` (counted from 0) of `epoch`, which Keras reruns.
            return {"epoch": metadata["epoch"], "steps_done": metadata["batch"] + 1}
        return None

    # === Skipping what the backup holds ===
    def on_epoch_begin(self, epoch, logs=None):
        # Keras sets it at epoch ends only: a resumed run's first backups would say epoch 0.
        self._current_epoch = epoch
        self._skipped_steps, self._skipped_examples, self._skip_to = 0, 0, None
        position = self._position
        if position and position["epoch"] == epoch and position["steps_done"] > 0:
            self._skip_to = position
            steps, saved_steps = self.params.get("steps"), position.get("steps_per_epoch")
            if position.get("examples_done") is None and steps and saved_steps not in (None, steps):
                self._refuse(
                    f"has {steps} steps an epoch, and its training step does not record how many "
                    "examples the backup's batches held, so where it stopped cannot be found in "
                    "this run's batches. Rerun with the backup's batch size and data"
                )

    def _skipping(self) -> bool:
        """Whether the next batch of this epoch is one the backup holds already."""
        if self._skip_to is None:
            return False
        examples = self._skip_to.get("examples_done")
        if examples is not None and self._skipped_examples is not None:
            return self._skipped_examples < examples
        return self._skipped_steps < self._skip_to["steps_done"]

    def on_train_batch_begin(self, batch, logs=None):
        # `self._model`, not `self.model`, unless a step is swapped: on JAX, reading
        # `self.model` copies the training state into the variables.
        self._skip_call = self._skipping()
        if self._skip_call:
            model = self.model
            if self._real_step is None:
                self._real_step = model.train_function
                model.train_function = self._skip_step
        elif self._real_step is not None:
            self._model.train_function, self._real_step = self._real_step, None

    def on_train_batch_end(self, batch, logs=None):
        if self._skip_call:
            # Keras's count of batches since the last backup goes on; the backup on disk
            # already holds this state, and a new one would record an earlier position.
            self._should_save_on_batch(batch)
            return
        super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self._skipping():
            self._refuse(
                f"ended epoch {epoch} after {self._skipped_steps} batches"
                + self._examples_phrase(self._skipped_examples)
                + ", before that position: its data is shorter. Rerun with the backup's data"
            )
        super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        self._restore_step()
        super().on_train_end(logs)

    def _restore_step(self):
        if self._real_step is not None:
            self._model.train_function, self._real_step = self._real_step, None

    def _skip_step(self, *args):
        """A step that reads its batches and trains on none: `(iterator)` on TensorFlow,
        `(state, iterator)` on JAX, which takes the unchanged state back."""
        for _ in range(self._model.steps_per_execution):
            if not self._skipping():
                if self._skipped_steps == self.params.get("steps"):
                    break  # the backup was taken at the epoch's end
                self._refuse(
                    "would have to start inside a group of `steps_per_execution="
                    f"{self._model.steps_per_execution}` batches. Rerun with the backup's batch "
                    "size and `steps_per_execution`"
                )
            batch = next(args[-1])
            self._skipped_steps += 1
            if self._skipped_examples is not None:
                size = _examples_in(batch, self._model)
                if self._skipped_steps == 1:
                    self._check_batch_size(size)  # may fall back to counting batches
            if self._skipped_examples is not None:
                self._skipped_examples += size
                self._check_skipped()
        return {} if len(args) == 1 else ({}, args[0])

    def _check_batch_size(self, size):
        """Refuses a resume that cannot start where the backup stopped, or warns that it
        resumes after the same examples with another batch size (`size`, this run's first)."""
        position = self._skip_to
        examples, done = position.get("examples_done"), position["steps_done"]
        steps, saved_steps = self.params.get("steps"), position.get("steps_per_epoch")
        saved_size, at_end = position.get("batch_size"), done == saved_steps
        if saved_size is None and examples and not at_end and examples % done == 0:
            saved_size = examples // done
        if size is not None and (steps is None or steps > 1):
            self._batch_size = size
        if examples is None or size is None:
            if steps and saved_steps not in (None, steps):
                self._refuse(f"has {steps} steps an epoch. Rerun with the backup's batch size")
            self._skipped_examples = None  # skipped by batches, as recorded
            return
        data_changed = (
            f"has {steps} steps of {size} examples an epoch{_length(steps, size)}: its data "
            "changed. Rerun with the backup's data"
        )
        if saved_size in (None, size):  # None: taken at an epoch's end, checked while skipping
            if saved_size and steps and saved_steps not in (None, steps):
                self._refuse(data_changed)
            return
        if steps and saved_steps and _disjoint(saved_steps, saved_size, steps, size):
            self._refuse(data_changed)
        if examples % size and not at_end:
            self._refuse(
                f"has batches of {size} examples, and {examples} is not a whole number of them. "
                f"Rerun with batch_size={saved_size} (or one that divides {examples})"
            )
        warnings.warn(
            f"BackupAndRestore: {self._described()}; this run's batches hold {size} examples "
            f"({steps or 'unknown'} steps an epoch): it resumes after {examples // size} of them, "
            f"the same {examples} examples.",
            UserWarning,
            stacklevel=2,
        )

    def _check_skipped(self):
        position, skipped = self._skip_to, self._skipped_examples
        examples, steps = position.get("examples_done"), self.params.get("steps")
        if examples is None:
            return
        if skipped > examples:
            self._refuse(
                f"read {skipped} examples in its first {self._skipped_steps} batches: no batch "
                "of it ends at that position. Rerun with the backup's batch size"
            )
        at_end = position["steps_done"] == position.get("steps_per_epoch")
        if skipped == examples and at_end and steps and self._skipped_steps < steps:
            self._refuse(
                f"has {steps} steps an epoch, more than its first {self._skipped_steps} batches "
                f"({skipped} examples): its data changed. Rerun with the backup's data"
            )

    def _refuse(self, what: str):
        self._restore_step()
        raise ValueError(
            f"BackupAndRestore cannot resume exactly from {self.backup_dir!r}: "
            f"{self._described()}, but this run {what}, or delete {self.backup_dir!r} to start "
            "training again."
        )

    def _described(self) -> str:
        position = self._skip_to
        done, size = position["steps_done"], position.get("batch_size")
        steps = position.get("steps_per_epoch")
        batches = f"{done} batches" + (f" of {size}" if size else "")
        per_epoch = f", {steps} steps an epoch{_length(steps, size)}" if steps else ""
        return (
            f"its backup was taken after {batches}"
            + self._examples_phrase(position.get("examples_done"))
            + f" of epoch {position['epoch']} (counted from 0){per_epoch}"
        )

    @staticmethod
    def _examples_phrase(examples) -> str:
        return "" if examples is None else f" ({examples} examples)"

    # === Writing a backup ===
    def _save_model(self):
        if "://" in str(self.backup_dir):  # remote: Keras's own writes
            return super()._save_model()
        os.makedirs(self.backup_dir, exist_ok=True)
        if self.double_checkpoint:
            for path, previous in ((self._weights_path, self._prev_weights_path),
                                   (self._training_metadata_path,
                                    self._prev_training_metadata_path)):
                if os.path.exists(path):
                    with replacing(previous) as temporary:
                        shutil.copyfile(path, temporary)
        # One file, replaced atomically, holds the weights and the position they were taken at.
        model = self.model
        position = self._position_now(model)
        with replacing(self._weights_path) as temporary:
            model.save_weights(temporary, overwrite=True)
            with h5py.File(temporary, "a") as f:
                f.attrs[POSITION_KEY] = json.dumps(position)
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
        write_text_atomically(self._training_metadata_path, json.dumps(metadata))

    def _position_now(self, model) -> dict:
        """Where training is: `epoch`, `steps_done` and `examples_done` in it (None when the
        training step does not count them), `batch_size` and `steps_per_epoch` (None: unknown)."""
        steps = self.params.get("steps")
        if self.save_freq == "epoch":  # Keras calls it at an epoch's end, for the next epoch
            done, examples = 0, 0
        else:
            done = self._last_batch_seen + 1
            trained, count = done - self._skipped_steps, _examples_trained(model)
            examples = None
            if count is not None and self._skipped_examples is not None and (
                count > 0 or trained == 0
            ):
                examples = self._skipped_examples + count
                if trained and steps and done < steps and count % trained == 0:
                    self._batch_size = count // trained  # full batches only
        return {"epoch": self._current_epoch, "steps_done": done, "examples_done": examples,
                "batch_size": self._batch_size, "steps_per_epoch": steps}


def _examples_trained(model):
    """Examples the training step ran on in this epoch (Keras's loss tracker counts them, with
    Keras's step and the Distiller's), or None with another step."""
    if not isinstance(model, Distiller) and type(model).train_step is not keras.Model.train_step:
        return None
    tracker = next((m for m in model.metrics if m.name == "loss"), None)
    count = getattr(tracker, "count", None)
    return None if count is None else round(float(keras.ops.convert_to_numpy(count)))


def _examples_in(batch, model):
    """The examples in one batch as the training step reads it (all replicas'), or None."""
    x = keras.utils.unpack_x_y_sample_weight(batch)[0]
    leaf = next((i for i in keras.tree.flatten(x) if i is not None), None)
    if keras.backend.backend() == "tensorflow" and leaf is not None:
        strategy = model.distribute_strategy
        parts = strategy.experimental_local_results(leaf)
        sizes = [part.shape[0] for part in parts]
        if None in sizes:
            return None
        return sum(sizes) * strategy.num_replicas_in_sync // len(parts)
    shape = getattr(leaf, "shape", None)
    return None if not shape or shape[0] is None else int(shape[0])


def _length(steps, size) -> str:
    """The examples an epoch of `steps` batches of `size` holds: the last may be partial."""
    if not steps or not size:
        return ""
    low, high = (steps - 1) * size + 1, steps * size
    return f", {low} to {high} examples" if low < high else f", {high} examples"


def _disjoint(steps, size, other_steps, other_size) -> bool:
    """Whether no data length gives both `steps` batches of `size` and `other_steps` of
    `other_size`."""
    return (steps - 1) * size >= other_steps * other_size or (
        (other_steps - 1) * other_size >= steps * size
    )
