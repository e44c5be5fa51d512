"""`BetaDecay`: step decay of a loss weight, a `BetaScheduler` with the paper's schedule."""

from __future__ import annotations

import keras

from keras_at._argument_checks import check_nonnegative
from keras_at.callbacks.beta_scheduler import BetaScheduler


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
