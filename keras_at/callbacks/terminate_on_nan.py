"""TerminateOnNaN for a Distiller: names the term, or the weights, that went non-finite first."""

from __future__ import annotations

import math

import keras
import numpy as np

from keras_at.distiller import Distiller
from keras_at.settings import TERMS


@keras.saving.register_keras_serializable(package="keras_at")
class TerminateOnNaN(keras.callbacks.TerminateOnNaN):
    """Stops training on a non-finite loss or student weight, and names what went non-finite.

    `keras.callbacks.TerminateOnNaN` stops a Distiller too, but only says the
    loss is invalid; this one says which of `task_loss`, `at_loss`,
    `kd_loss`, `hint_loss`, `grad_at_loss`, ... was non-finite first, so a
    diverging AT weight is told apart from a diverging learning rate.

    It also stops when the student's weights (or a hint adapter's) stop
    being finite while the loss is not: with oneDNN, a NaN image can leave
    every logged loss finite and still turn the weights to NaN. The weights
    are checked at each epoch's end, at the end of training, and every
    `check_weights_every` batches when that is > 0. The message says
    whether a logged term was non-finite first (and which), or whether
    every logged value stayed finite, in which case the non-finite value
    came from the input batch (or a layer), not from a loss term.

    With `raise_error=True` it raises at once, so no later callback (a
    `ModelCheckpoint` at the epoch's end) writes the broken weights.

    Args:
        raise_error: raise a `RuntimeError` instead of stopping gracefully.
        check_weights_every: also check the weights every this many batches;
            0 checks them only at epoch and training ends.

    Example:

    ```python
    distiller.fit(ds, epochs=10, callbacks=[keras_at.callbacks.TerminateOnNaN()])
    ```
    """

    def __init__(self, raise_error: bool = False, check_weights_every: int = 0):
        super().__init__(raise_error=raise_error)
        if isinstance(check_weights_every, bool) or not isinstance(check_weights_every, int) or (
            check_weights_every < 0
        ):
            raise ValueError(
                f"`check_weights_every` must be an integer >= 0, got {check_weights_every!r}."
            )
        self.check_weights_every = check_weights_every

    def on_train_begin(self, logs=None):
        self._epoch, self._first_bad_term, self._stopped = 0, None, False

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        logs = logs or {}
        terms = ["task_loss", *TERMS.values()]
        bad = [f"{k}={float(logs[k])}" for k in terms
               if k in logs and not math.isfinite(float(logs[k]))]
        if bad and self._first_bad_term is None:
            self._first_bad_term = f"{', '.join(bad)} at epoch {self._epoch}, batch {batch}"
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            culprit = ", ".join(bad) if bad else "no single term (the regularisation losses)"
            self._stop(f"Batch {batch}: non-finite loss {float(loss)}; non-finite terms: "
                       f"{culprit}.")
        elif self.check_weights_every and (batch + 1) % self.check_weights_every == 0 and (
            not self._stopped
        ):
            self._check_weights(f"after batch {batch} of epoch {self._epoch}")

    def on_epoch_end(self, epoch, logs=None):
        if not self._stopped:
            self._check_weights(f"at the end of epoch {epoch}")

    def on_train_end(self, logs=None):
        if not self._stopped:
            self._check_weights("at the end of training")

    def _check_weights(self, when):
        variables = list(self.model.weights)
        if isinstance(self.model, Distiller):  # the student's and the adapters', not the teacher's
            variables = list(self.model.student.weights) + [
                v for a in self.model.hint_adapters if a is not None for v in a.weights
            ]
        bad = [v.path for v in variables
               if not np.all(np.isfinite(keras.ops.convert_to_numpy(v)))]
        if not bad:
            return
        if self._first_bad_term:
            source = f"the first non-finite value logged was {self._first_bad_term}"
        else:
            source = ("every logged loss and term stayed finite, so the first non-finite value "
                      "was not a loss term: it came from the input batch (check the data for "
                      "NaN or inf) or a layer's computation")
        shown = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "")
        self._stop(f"{len(bad)} of {len(variables)} student variables are not finite {when} "
                   f"({shown}); {source}.")

    def _stop(self, message):
        self._stopped = True
        message += " Terminating training."
        if self.raise_error:
            raise RuntimeError(message)
        print(message)
        self.model.stop_training = True

    def get_config(self):
        return {"raise_error": self.raise_error, "check_weights_every": self.check_weights_every}
