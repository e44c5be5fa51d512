"""The Distiller's plumbing on JAX: a stateless step of `jax.value_and_grad`, nested for J.

Keras's JAX trainer passes the step its state (trainable, non-trainable, optimizer and metric
variables' values) and takes the new state back; nothing is assigned in place. The Distiller's
shared code reads variables as usual inside a `keras.StatelessScope` that maps each variable
to its value in the state, and the new values (batch-norm statistics, metrics) are collected
from the scope afterwards. The student's input gradient J_S is a `jax.value_and_grad` over the
images nested in the step's `jax.value_and_grad` over the weights (double backprop): its
batch-norm updates are returned from the inner function and assigned in the outer scope, so no
value of the inner trace leaks out of it.

The Distiller's `fit`, `evaluate` and `predict` run Keras's loops with its two networks held by
the calling thread (another thread's loop on either is refused), and a label error of the step
raised as the `ValueError` it is.
"""

from __future__ import annotations

import contextlib
import re
import threading

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


# The threads running a Distiller's loop, per network: {id(network): [thread id, depth]}.
_IN_USE = {}
_IN_USE_LOCK = threading.Lock()


@contextlib.contextmanager
def exclusive_networks(networks):
    """Holds `networks` (`{role: model}`) for this thread while a loop of Keras runs them.

    Keras's JAX loops detach every variable's value while they run, hand the arrays to the
    compiled step to reuse (donated), and attach the new values at the end, so a network that
    a loop in another thread runs at the same time has no weights there: a `RuntimeError`
    naming it is raised instead. The thread already holding a network may enter again (the
    validation `evaluate` inside `fit`, a callback's `predict`).
    """
    me = threading.get_ident()
    with _IN_USE_LOCK:
        for role, network in networks.items():
            owner = _IN_USE.get(id(network))
            if owner is not None and owner[0] != me:
                raise RuntimeError(
                    f"The {role} {network.name!r} is in use by a Distiller's fit, evaluate or "
                    "predict in another thread. On JAX, Keras takes a model's weights out of its "
                    "variables while it runs it, so two threads cannot run one network at once: "
                    "run the Distillers one after another, or give each its own copy of the "
                    f"{role} (keras.models.clone_model, then set_weights)."
                )
        for network in networks.values():
            _IN_USE.setdefault(id(network), [me, 0])[1] += 1
    try:
        yield
    finally:
        with _IN_USE_LOCK:
            for network in networks.values():
                owner = _IN_USE[id(network)]
                owner[1] -= 1
                if owner[1] == 0:
                    del _IN_USE[id(network)]


class Trainer:
    """The Distiller's stateless `train_step` and `test_step` on JAX (a mixin before Model)."""

    # === Keras's loops, guarded ===
    def fit(self, *args, **kwargs):
        with self._guarded_loop():
            return super().fit(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        with self._guarded_loop():
            return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        with self._guarded_loop():
            return super().predict(*args, **kwargs)

    @contextlib.contextmanager
    def _guarded_loop(self):
        """One of Keras's loops, with its networks held by this thread (`exclusive_networks`)
        and a label error raised as a `ValueError` (`value_errors_of_callbacks`)."""
        with exclusive_networks({"student": self.student, "teacher": self.teacher}):
            with value_errors_of_callbacks():
                yield

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
