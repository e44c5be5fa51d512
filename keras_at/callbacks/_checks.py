"""What the callbacks of a Distiller refuse: another model, an unknown loss weight."""

from __future__ import annotations

from keras_at.distiller import Distiller
from keras_at.settings import WEIGHTS


def check_weight_name(weight):
    """A `ValueError` unless `weight` names a loss weight of the Distiller (`WEIGHTS`)."""
    if weight not in WEIGHTS:
        raise ValueError(f"Unknown loss weight {weight!r}; expected one of {WEIGHTS}.")


def check_distiller(callback, model, weight=None):
    """A `ValueError` naming `callback` unless `model` is a `keras_at.Distiller`."""
    if not isinstance(model, Distiller):
        wanted = f" to schedule its loss weight {weight!r} (one of {WEIGHTS})" if weight else ""
        raise ValueError(
            f"{type(callback).__name__} needs a keras_at.Distiller{wanted}, but the model being "
            f"trained is a {type(model).__name__}."
        )
