"""Callbacks for a `keras_at.Distiller`: loss-weight schedules and attention maps in TensorBoard.

The Distiller's loss weights (`beta`, `alpha`, ...) are non-trainable
variables read by the compiled step, so a schedule that assigns them takes
effect at the next step without recompiling. They are also part of the
Distiller's weights, so `keras.callbacks.BackupAndRestore` and checkpoints
restore the scheduled value when training resumes.

`BackupAndRestore` (exact mid-epoch resume) and `TerminateOnNaN` (non-finite
terms and weights) live in their own modules and are exported here.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from keras_at._validate import check_int, check_nonnegative
from keras_at.backup import BackupAndRestore
from keras_at.distiller import Distiller
from keras_at.settings import WEIGHTS
from keras_at.terminate_on_nan import TerminateOnNaN
from keras_at.visualize import DEFAULT_CMAP, GRID_COLUMNS, pair_grid

__all__ = ["AttentionMapLogger", "BackupAndRestore", "BetaDecay", "BetaScheduler", "TerminateOnNaN"]


def _check_weight_name(weight):
    if weight not in WEIGHTS:
        raise ValueError(f"Unknown loss weight {weight!r}; expected one of {WEIGHTS}.")


def _check_distiller(callback, model, weight=None):
    if not isinstance(model, Distiller):
        wanted = f" to schedule its loss weight {weight!r} (one of {WEIGHTS})" if weight else ""
        raise ValueError(
            f"{type(callback).__name__} needs a keras_at.Distiller{wanted}, but the model being "
            f"trained is a {type(model).__name__}."
        )


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
            `keras_at.distiller.WEIGHTS` (`"beta"`, `"alpha"`, `"hint_beta"`,
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
        _check_weight_name(weight)
        self.schedule = schedule
        self.weight = weight
        self.verbose = verbose
        self._first_epoch, self._last_scheduled = False, -1

    def on_train_begin(self, logs=None):
        _check_distiller(self, self.model, self.weight)
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


@keras.saving.register_keras_serializable(package="keras_at")
class BetaDecay(BetaScheduler):
    """Step decay of a loss weight: multiplies it by `factor` at each listed epoch.

    The value at epoch `e` is `base * factor ** n`, `n` the number of listed
    epochs `<= e`. The paper decays β "during training" for AT+KD and F-ActT
    but gives no schedule (nor does the authors' code); the example scripts'
    `--beta-decay` uses this one, ×0.2 at the learning-rate drops, as this
    library's choice. It is a function of the epoch and of `base` only, so
    resuming never compounds the decay.
    `base` is `initial_value` when given; otherwise it is read from the
    Distiller the first time this callback trains it. When that first epoch
    is a resumed one (`BackupAndRestore`, or restored weights with
    `initial_epoch`), the decay already applied is divided out of the
    restored value (up to the epoch whose schedule it holds, which the
    Distiller saves with its weights). Pass `initial_value` when resuming
    from a fresh model whose weights were not restored.

    Args:
        factor: multiplier applied at each listed epoch, finite and >= 0
            (0 switches the term off from that epoch on).
        epochs: epochs (counted from 0) at whose start the factor is applied.
        weight: the loss weight to decay, one of `keras_at.distiller.WEIGHTS`.
        initial_value: the weight before the first listed epoch; None reads it
            from the Distiller.
        verbose: 0 quiet, 1 prints each update.

    Example:

    ```python
    decay = keras_at.callbacks.BetaDecay(factor=0.2, epochs=(60, 120, 160))
    distiller.fit(train_ds, epochs=200, callbacks=[decay])  # beta: 1e3, 200, 40, 8
    ```
    """

    def __init__(
        self,
        factor: float = 0.2,
        epochs=(60, 120, 160),
        weight: str = "beta",
        initial_value: float | None = None,
        verbose: int = 0,
    ):
        factor = check_nonnegative(factor, "factor")
        if isinstance(epochs, int):
            epochs = (epochs,)
        epochs = tuple(epochs)
        if not all(isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in epochs):
            raise ValueError(f"`epochs` must be integers >= 0, got {epochs!r}.")
        if len(set(epochs)) != len(epochs):
            raise ValueError(f"`epochs` lists an epoch twice: {epochs!r}.")
        if initial_value is not None:
            check_nonnegative(initial_value, "initial_value")
        super().__init__(self._decayed, weight=weight, verbose=verbose)
        self.factor = factor
        self.epochs = tuple(sorted(epochs))
        self.initial_value = initial_value
        self._base = initial_value
        self._base_model = None

    def _decays_up_to(self, epoch):
        return sum(e <= epoch for e in self.epochs)

    def _decayed(self, epoch, current):
        if self.initial_value is None and self._base_model is not self.model:
            # First epoch on this model: `current` holds the value scheduled for the last
            # scheduled epoch, or for epoch - 1 when none is recorded.
            last = self._last_scheduled if self._last_scheduled >= 0 else epoch - 1
            applied = self._decays_up_to(last)
            self._base = current / self.factor**applied if applied and self.factor else current
            self._base_model = self.model
        return self._base * self.factor ** self._decays_up_to(epoch)

    def get_config(self):
        return {
            "factor": self.factor,
            "epochs": list(self.epochs),
            "weight": self.weight,
            "initial_value": self.initial_value,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_at")
class AttentionMapLogger(keras.callbacks.Callback):
    """Writes the Distiller's attention maps for a fixed batch to TensorBoard.

    At the end of epochs 0, n, 2n, ... (`n = every_n_epochs`, the convention
    of `keras.callbacks.TensorBoard`'s `histogram_freq`), for every pair of
    `distiller.pairs`, one image under the tag `attention/<pair>`: a grid
    whose rows are the examples and whose columns are the input image, the
    teacher's map, the student's map and the student's map overlaid on the
    image (`keras_at.visualize.pair_grid`; maps upsampled to the input size,
    colour-mapped, each min-max normalised for display), so the IMAGES tab
    shows one picture per pair to compare student and teacher at a glance.
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
        _check_distiller(self, self.model)
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
