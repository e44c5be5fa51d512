"""`BetaScheduler`: a loss weight of the Distiller set at each epoch start from a schedule.

The Distiller's loss weights (`beta`, `alpha`, ...) are non-trainable variables read by the
compiled step, so a schedule that assigns them takes effect at the next step without
recompiling. They are also part of the Distiller's weights, so `BackupAndRestore` and checkpoints
restore the scheduled value when training resumes, with the epoch whose schedule set it
(`distiller.schedule_marks`).
"""

from __future__ import annotations

import keras
import numpy as np

from keras_at._argument_checks import check_nonnegative
from keras_at.callbacks._checks import check_distiller, check_weight_name
from keras_at.settings import WEIGHTS


def _scheduled_epoch(model, weight) -> int:
    """The epoch whose schedule set `weight`'s current value, or -1 when unknown (none was
    recorded, or the value was assigned since)."""
    epoch, value = keras.ops.convert_to_numpy(model.schedule_marks)[WEIGHTS.index(weight)]
    return int(epoch) if value == np.float32(getattr(model, weight)) else -1


def _mark(model, weight, epoch):
    marks = keras.ops.convert_to_numpy(model.schedule_marks).copy()
    marks[WEIGHTS.index(weight)] = (epoch, getattr(model, weight))
    model.schedule_marks.assign(marks)


@keras.saving.register_keras_serializable(package="keras_at")
class BetaScheduler(keras.callbacks.Callback):
    """Sets a loss weight of the Distiller at each epoch start from a schedule.

    Modelled on `keras.callbacks.LearningRateScheduler`: at the beginning of
    every epoch, `distiller.<weight> = schedule(epoch, current_value)`; at its
    end the value is written into the epoch logs under the weight's name, so
    `history.history["beta"]` holds it (put this callback before
    `keras.callbacks.TensorBoard` in the list for TensorBoard to plot it).
    The weight is a variable read by the compiled step: a value of 0 removes
    the term from the total loss from the next step on.

    `epoch` is the absolute epoch index, so a schedule that is a function of
    the epoch gives the right value after resuming (`initial_epoch`,
    `BackupAndRestore`). A schedule that depends on the current value also
    resumes correctly, since the weight variables are saved and restored with
    the Distiller's weights, with the epoch whose schedule they hold
    (`distiller.schedule_marks`): a run resumed from a mid-epoch backup
    does not apply that epoch's schedule a second time.

    Args:
        schedule: function `(epoch, current_value) -> new_value`, the epoch
            counted from 0; the value must be finite and >= 0.
        weight: the loss weight to schedule, one of
            `keras_at.settings.WEIGHTS` (`"beta"`, `"alpha"`, `"hint_beta"`,
            `"grad_beta"`, `"symmetry_beta"`, `"input_grad_penalty"`,
            `"symmetry_output_beta"`).
        verbose: 0 quiet, 1 prints each update.

    Example:

    ```python
    # Activation AT for 10 epochs, then the student trains on its task alone.
    schedule = keras_at.callbacks.BetaScheduler(lambda epoch, beta: beta if epoch < 10 else 0.0)
    history = distiller.fit(train_ds, epochs=20, callbacks=[schedule])
    history.history["beta"]  # [1000.0] * 10 + [0.0] * 10
    ```
    """

    def __init__(self, schedule, weight: str = "beta", verbose: int = 0):
        super().__init__()
        if not callable(schedule):
            raise ValueError(
                f"`schedule` must be a function (epoch, current_value) -> value, got {schedule!r}."
            )
        check_weight_name(weight)
        self.schedule = schedule
        self.weight = weight
        self.verbose = verbose
        self._first_epoch, self._last_scheduled = False, -1

    def on_train_begin(self, logs=None):
        check_distiller(self, self.model, self.weight)
        self._first_epoch = True

    def on_epoch_begin(self, epoch, logs=None):
        self._last_scheduled = _scheduled_epoch(self.model, self.weight)
        first, self._first_epoch = self._first_epoch, False
        if first and self._last_scheduled == epoch:
            # Resumed from a mid-epoch backup: the restored value is this epoch's already.
            return
        current = getattr(self.model, self.weight)
        value = self._checked(epoch, self.schedule(epoch, current))
        try:
            setattr(self.model, self.weight, value)
        except ValueError as error:  # e.g. alpha > 1: say which epoch asked for it
            raise ValueError(f"The schedule of `{self.weight}` at epoch {epoch}: {error}") from None
        _mark(self.model, self.weight, epoch)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: {type(self).__name__} setting {self.weight} to {value}.")

    def on_train_end(self, logs=None):
        # A finished fit leaves no mark: the next fit applies its first epoch's schedule.
        _mark(self.model, self.weight, -1)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[self.weight] = getattr(self.model, self.weight)

    def _checked(self, epoch, value):
        try:
            return check_nonnegative(value, self.weight)
        except ValueError as error:
            raise ValueError(
                f"The schedule of `{self.weight}` returned {value!r} at epoch {epoch}: {error}"
            ) from None

    def get_config(self):
        return {"schedule": self.schedule, "weight": self.weight, "verbose": self.verbose}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("schedule"), dict):
            config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)
