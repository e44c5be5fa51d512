"""The Distiller's live settings: loss weights (names, the term each multiplies), temperature,
attention settings, with their validation and the properties that expose them.

The KD temperature is validated here too: like the weights, it is a live variable of the
Distiller, and a value is refused alike at construction and at assignment (booleans and
strings are not numbers, even where `float()` would read them; numpy scalars are numbers).
Each value is checked as the float32 variable will hold it, not only as the Python float
given: 1e39 would be stored as inf, 1e-46 as 0, and either trains to NaN or to nothing.

Each weight is held by the Distiller as a non-trainable `keras.Variable` and
exposed as a plain attribute (`distiller.beta = 500.0`): the compiled step
reads the variable, so a new value takes effect at the next step without
recompiling, and the value is saved and restored with the model's weights
(`BackupAndRestore` resumes a schedule where it was).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from keras_at._validate import check_nonnegative, check_number
from keras_at.attention import check_attention_args

# Loss weights, in the order of the Distiller's arguments.
WEIGHTS = ("beta", "alpha", "hint_beta", "grad_beta", "symmetry_beta", "input_grad_penalty",
           "symmetry_output_beta")
# The history key of the term each weight multiplies.
TERMS = {
    "beta": "at_loss",
    "alpha": "kd_loss",
    "hint_beta": "hint_loss",
    "grad_beta": "grad_at_loss",
    "symmetry_beta": "symmetry_loss",
    "input_grad_penalty": "input_grad_loss",
    "symmetry_output_beta": "symmetry_output_loss",
}


FLOAT32 = np.finfo(np.float32)


def _as_float32(value: float) -> np.float32:
    with np.errstate(over="ignore"):  # an overflow to inf is refused by the caller
        return np.float32(value)


def check_weight(name: str, value) -> float:
    """`value` as a float, or a `ValueError` naming the weight and what was expected.

    A weight is 0 or a normal float32: larger than float32's largest value it would be stored
    as inf, and below its smallest normal value as 0 or a denormal that CPUs may flush to 0.
    """
    value = check_nonnegative(value, name)
    if name == "alpha" and value > 1:
        raise ValueError(f"`alpha` must be in [0, 1], got {value!r}.")
    stored = _as_float32(value)
    if value != 0 and not FLOAT32.tiny <= stored <= FLOAT32.max:
        raise ValueError(
            f"`{name}`={value!r} is out of float32's range, in which the step computes (it "
            f"would be {stored}): use 0 (off) or a value between {FLOAT32.tiny:.3g} and "
            f"{FLOAT32.max:.3g}."
        )
    return value


# The KD term scales by T²: T² must be a normal float32 (T=2e19 gives inf * 0 = NaN, T=1e-20
# a term of 0), so T lies between the square roots of float32's smallest normal and largest.
TEMPERATURE_RANGE = (float(np.sqrt(FLOAT32.tiny)), float(np.sqrt(FLOAT32.max)))


def check_temperature(value) -> float:
    """The KD temperature as a float, or a `ValueError`: it must be finite and > 0, and its
    float32 square, the KD term's factor, a normal float32 (`TEMPERATURE_RANGE`)."""
    value = check_number(value, "temperature")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`temperature` must be a finite number > 0, got {value!r}.")
    stored = _as_float32(value)
    with np.errstate(over="ignore", under="ignore"):
        square = stored * stored
    if not FLOAT32.tiny <= square <= FLOAT32.max:
        low, high = TEMPERATURE_RANGE
        raise ValueError(
            f"`temperature`={value!r} is out of range for float32: the KD term scales by T², "
            f"which must be a normal float32, so T must be between {low:.3g} and {high:.3g}."
        )
    return value


def live_variables(weights, temperature):
    """`({name: weight}, temperature, schedule_marks)`: non-trainable float32 variables.

    `weights` are the values of `WEIGHTS` in order. Created in the order the saved files
    hold them. `schedule_marks` holds, per weight, the `(epoch, value)` a schedule callback
    last set (-1: none): saved with the weights, so a run resumed mid-epoch does not apply
    that epoch's schedule twice.
    """

    def variable(name, value):
        return keras.Variable(value, trainable=False, dtype="float32", name=name)

    named = {name: variable(name, check_weight(name, v)) for name, v in zip(WEIGHTS, weights)}
    temperature = variable("temperature", check_temperature(temperature))
    marks = variable("schedule_marks", [[-1.0, 0.0]] * len(WEIGHTS))
    return named, temperature, marks


def weight_property(name: str) -> property:
    """A property reading and assigning the Distiller's variable for weight `name`."""

    def getter(self):
        return float(keras.ops.convert_to_numpy(self._loss_weights[name]))

    def setter(self, value):
        self._set_loss_weight(name, value)

    return property(getter, setter, doc=f"Loss weight `{name}`; settable during `fit`.")


def temperature_property() -> property:
    """The KD temperature, a live variable (`_temperature`) like the weights."""

    def getter(self):
        return float(keras.ops.convert_to_numpy(self._temperature))

    def setter(self, value):
        self._temperature.assign(check_temperature(value))

    return property(getter, setter, doc="KD temperature, a live variable: a new value takes "
                                        "effect at the next step.")


def attention_property(name: str, doc: str) -> property:
    """`p` or `reduction` (held as `_p`, `_reduction`): the traced step reads the Python value,
    so assigning a new one retraces it."""

    def getter(self):
        return getattr(self, f"_{name}")

    def setter(self, value):
        settings = {"p": self._p, "reduction": self._reduction, name: value}
        p = check_attention_args(settings["p"], settings["reduction"])
        value = p if name == "p" else value
        if value != getter(self):
            setattr(self, f"_{name}", value)
            self._retrace()

    return property(getter, setter, doc=doc)


def pairs_property() -> property:
    """The `(student_layer_name, teacher_layer_name)` pairs (`_pairs`): read-only."""

    def getter(self):
        return list(self._pairs)

    def setter(self, value):
        raise AttributeError(
            "`pairs` is fixed at construction: the feature taps, hint adapters and saved weights "
            "are built for it. Build a new keras_at.Distiller(student, teacher, pairs=[...]); "
            "the student and teacher keep their weights."
        )

    return property(getter, setter, doc="The `(student_layer_name, teacher_layer_name)` pairs, "
                                        "fixed at construction.")
