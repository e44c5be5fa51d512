"""The Distiller's plumbing on JAX: a stateless step of `jax.value_and_grad`, nested for J.

Keras's JAX trainer passes the step its state (trainable, non-trainable, optimizer and metric
variables' values) and takes the new state back; nothing is assigned in place. The Distiller's
shared code reads variables as usual inside a `keras.StatelessScope` that maps each variable
to its value in the state, and the new values (batch-norm statistics, metrics) are collected
from the scope afterwards. The student's input gradient J_S is a `jax.value_and_grad` over the
images nested in the step's `jax.value_and_grad` over the weights (double backprop): its
batch-norm updates are returned from the inner function and assigned in the outer scope, so no
value of the inner trace leaks out of it.
"""

from __future__ import annotations

import jax
import numpy as np
from keras import StatelessScope
from keras.src.backend.common.stateless_scope import get_stateless_scope


def replicas() -> int:
    """1: under `keras.distribution`, the step's arrays are global, its means global means."""
    return 1


def _current(variable, scope):
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
    before = [_current(v, outer) for v in variables]

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

    JAX reports the error as a `JaxRuntimeError` whose message holds the `ValueError`'s.
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


class Trainer:
    """The Distiller's stateless `train_step` and `test_step` on JAX (a mixin before Model)."""

    def _mapping(self, trainable, non_trainable):
        return [*zip(self.trainable_variables, trainable),
                *zip(self.non_trainable_variables, non_trainable)]

    def _stateless_terms(self, trainable, non_trainable, data, training):
        """`(total, (logits, terms, new non-trainable values))` of a batch."""
        x, y, sample_weight, cached = data
        with StatelessScope(state_mapping=self._mapping(trainable, non_trainable)) as scope:
            logits, terms = self._terms(x, y, sample_weight, training=training, cached=cached)
            total = self._total(terms)
        non_trainable = [_current(v, scope) for v in self.non_trainable_variables]
        return total, (logits, terms, non_trainable)

    def _stateless_record(self, metrics_variables, data, logits, terms, total):
        x, y, sample_weight, _ = data
        with StatelessScope(state_mapping=list(zip(self.metrics_variables,
                                                   metrics_variables))) as scope:
            logs = self._record(x, y, logits, sample_weight, terms, total)
        return logs, [_current(v, scope) for v in self.metrics_variables]

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_variables, metrics_variables = state
        data = self._unpack(data)

        def loss(trainable, non_trainable):
            total, aux = self._stateless_terms(trainable, non_trainable, data, training=True)
            with StatelessScope(state_mapping=list(zip(self.optimizer.variables,
                                                       optimizer_variables))):
                scaled = self.optimizer.scale_loss(total)
            return scaled, (total, *aux)

        (_, (total, logits, terms, non_trainable)), gradients = jax.value_and_grad(
            loss, has_aux=True)(trainable, non_trainable)
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, gradients, trainable)
        logs, metrics_variables = self._stateless_record(
            metrics_variables, data, logits, terms, total)
        return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)

    def test_step(self, state, data):
        trainable, non_trainable, metrics_variables = state
        data = self._unpack(data)
        total, (logits, terms, non_trainable) = self._stateless_terms(
            trainable, non_trainable, data, training=False)
        logs, metrics_variables = self._stateless_record(
            metrics_variables, data, logits, terms, total)
        return logs, (trainable, non_trainable, metrics_variables)

    # MultiWorkerMirroredStrategy's file discipline (TensorFlow's) has nothing to do here.
    def _worker_callbacks(self, callbacks):
        return callbacks

    def _per_worker_input(self, x, kwargs):
        return x, kwargs
