"""The Distiller's live settings: loss weights (names, the term each multiplies), temperature,
attention settings, with their validation and the properties that expose them.

The KD temperature is a live variable of the Distiller like the weights, refused alike at
construction and at assignment by `keras_at.losses.check_temperature`, `kd_loss`'s own check
(booleans and strings are not numbers, even where `float()` would read them; numpy scalars are
numbers). Each value is checked as the float32 variable will hold it, not only as the Python
float given: 1e39 would be stored as inf, 1e-46 as 0, and either trains to NaN or to nothing.

Each weight is held by the Distiller as a non-trainable `keras.Variable` and
exposed as a plain attribute (`distiller.beta = 500.0`): the compiled step
reads the variable, so a new value takes effect at the next step without
recompiling, and the value is saved and restored with the model's weights
(`BackupAndRestore` resumes a schedule where it was).
"""

from __future__ import annotations

import keras

from keras_at._argument_checks import FLOAT32, as_float32, check_nonnegative
from keras_at.attention import check_attention_args
from keras_at.losses import check_temperature

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


def check_weight(name: str, value) -> float:
    """`value` as a float, or a `ValueError` naming the weight and what was expected.

    A weight is 0 or a normal float32: larger than float32's largest value it would be stored
    as inf, and below its smallest normal value as 0 or a denormal that CPUs may flush to 0.
    """
    value = check_nonnegative(value, name)
    if name == "alpha" and value > 1:
        raise ValueError(f"`alpha` must be in [0, 1], got {value!r}.")
    stored = as_float32(value)
    if value != 0 and not FLOAT32.tiny <= stored <= FLOAT32.max:
        raise ValueError(
            f"`{name}`={value!r} is out of float32's range, in which the step computes (it "
            f"would be {stored}): use 0 (off) or a value between {FLOAT32.tiny:.3g} and "
            f"{FLOAT32.max:.3g}."
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
