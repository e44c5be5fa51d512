"""The step's primitives on JAX: J by a nested `jax.value_and_grad`, `jax.jit`, label checks.

The trainer (`keras_at.trainers.jax`) runs the step statelessly, inside a `keras.StatelessScope`
mapping each variable to its value in Keras's state. The student's input gradient J_S is a
`jax.value_and_grad` over the images nested in the step's `jax.value_and_grad` over the weights
(double backprop): its batch-norm updates are returned from the inner function and assigned in
the outer scope, so no value of the inner trace leaks out of it. The label check is a host
callback whose `ValueError` reaches the loops wrapped by JAX (`value_errors_of_callbacks`).
"""

from __future__ import annotations

import contextlib
import re

import jax
import numpy as np
from keras import StatelessScope
from keras.src.backend.common.stateless_scope import get_stateless_scope


def replicas() -> int:
    """1: under `keras.distribution`, the step's arrays are global, its means global means."""
    return 1


def current_value(variable, scope):
    """The value `variable` has in `scope` (the state's), else its own."""
    value = None if scope is None else scope.get_current_value(variable)
    return variable.value if value is None else value


def input_gradient(tap, function, x):
    """`(d function(x)[0] / dx, function(x)[1])`, differentiable in the weights of `tap`.

    `function` runs the tap model `tap`; the variables it assigns (batch-norm statistics in
    training) are assigned again outside the inner differentiation.
    """
    outer = get_stateless_scope()
    variables = tap.variables
    before = [current_value(v, outer) for v in variables]

    def inner(x):
        with StatelessScope(state_mapping=list(zip(variables, before))) as scope:
            value, aux = function(x)
        return value, (aux, [scope.get_current_value(v) for v in variables])

    (_, (aux, after)), jacobian = jax.value_and_grad(inner, has_aux=True)(x)
    for variable, old, new in zip(variables, before, after):
        if new is not old:
            variable.assign(new)  # recorded by the step's scope
    return jacobian, aux


def linear_map(function, x):
    """`function(x)`: JAX differentiates image resizes any number of times as they are."""
    return function(x)


def compiled(function, variables=()):
    """`function` under `jax.jit`, reading `variables`' current values at each call.

    The values are arguments of the compiled function, not constants of its trace, so a
    teacher whose weights are loaded after the first call is read as it is now.
    """
    variables = list(variables)

    @jax.jit
    def run(values, *args):
        with StatelessScope(state_mapping=list(zip(variables, values))):
            return function(*args)

    def call(*args):
        return run([v.value for v in variables], *args)

    return call


def check_labels(y, classes: int, whole: bool, ignore_class=None):
    """`y`, after a host callback in the compiled step that raises when a label is outside
    `[0, classes)` and is not `ignore_class` (or, with `whole`, a float label has a fractional
    part), naming the values.

    JAX reports the error as a `JaxRuntimeError` whose message holds the `ValueError`'s; the
    Distiller's `fit`, `evaluate` and `predict` raise the `ValueError` itself
    (`value_errors_of_callbacks`).
    """

    def report(y):
        y = np.asarray(y)
        if whole:
            fractional = np.unique(y[y != np.round(y)])
            if fractional.size:
                raise ValueError(
                    f"Float labels must be whole class indices; fractional labels: {fractional}"
                )
        outside = (y < 0) | (y >= classes)
        allowed = f"[0, {classes}), the student's classes"
        if ignore_class is not None:
            outside &= y != ignore_class
            allowed += f", or {ignore_class}, the loss's ignore_class"
        if outside.any():
            raise ValueError(f"Labels must be in {allowed}; got labels: "
                             f"{np.unique(y[outside])}")

    jax.debug.callback(report, y)
    return y


def check_same_batch(student, teacher, message: str):
    """`teacher`: under `jax.jit` every shape is known while tracing, so the caller's static
    check has already compared the batch sizes."""
    del student, message
    return teacher


# A host callback's exception reaches Python as a JaxRuntimeError whose message ends with the
# callback's traceback: "...\nValueError: <message>".
_CALLBACK_VALUE_ERROR = re.compile(r"^ValueError: (.*)\Z", re.MULTILINE | re.DOTALL)


@contextlib.contextmanager
def value_errors_of_callbacks():
    """Raises the `ValueError` of a host callback (the label check) as itself, not wrapped in
    the `JaxRuntimeError` ("INTERNAL: CpuCallback error") JAX reports it as."""
    try:
        yield
    except jax.errors.JaxRuntimeError as error:
        match = _CALLBACK_VALUE_ERROR.search(str(error))
        if match is None:
            raise
        raise ValueError(match.group(1).strip()) from error
