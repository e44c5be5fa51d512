"""Argument checks that several modules share: one implementation and one message each.

Each raises early, naming the argument and the value it was given. The module imports nothing
from keras_at, so every module, down to the models and the data package, can use it.
"""

from __future__ import annotations

import math
import os

import numpy as np


def check_int(value, name: str, minimum: int = 1) -> int:
    """`value` as an int, or a `ValueError`: it must be an integer (not a bool) >= `minimum`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or (
        value < minimum
    ):
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {name}={value!r}.")
    return int(value)


def check_number(value, name: str) -> float:
    """`value` as a float; booleans and strings are refused, not read as 1.0 or parsed."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise ValueError(f"`{name}` must be a number, got {value!r}.")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number, got {value!r}.") from None


def check_positive(value, name: str) -> int | float:
    """`value` as a Python int (for an integer) or float, or a `ValueError`: it must be a finite
    number > 0 (`check_number`; numpy scalars are numbers like Python's)."""
    number = check_number(value, name)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"`{name}` must be a positive finite number, got {name}={value!r}.")
    return int(value) if isinstance(value, (int, np.integer)) else number


def check_nonnegative(value, name: str) -> float:
    """`value` as a float, or a `ValueError`: it must be a finite number >= 0 (`check_number`)."""
    number = check_number(value, name)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
    return number


FLOAT32 = np.finfo(np.float32)


def as_float32(value: float) -> np.float32:
    """`value` as the float32 a variable would hold (inf where it overflows: the caller refuses
    it)."""
    with np.errstate(over="ignore"):
        return np.float32(value)


def shapes_match(got, expected) -> bool:
    """Whether two shapes have one rank and agree wherever both sizes are known (None: any)."""
    got, expected = tuple(got), tuple(expected)
    return len(got) == len(expected) and all(
        g is None or e is None or g == e for g, e in zip(got, expected)
    )


def refuse_overwrite(filepath, overwrite: bool) -> None:
    """A `FileExistsError` naming `filepath` when it exists and `overwrite` is false."""
    if not overwrite and os.path.exists(filepath):
        raise FileExistsError(
            f"{os.fspath(filepath)} exists; pass overwrite=True to replace it, or choose another "
            "path."
        )
