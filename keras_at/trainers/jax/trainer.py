"""The Distiller's trainer on JAX: a stateless step of `jax.value_and_grad`.

Keras's JAX trainer passes the step its state (trainable, non-trainable, optimizer and metric
variables' values) and takes the new state back; nothing is assigned in place. The shared step
(`keras_at.step`) reads variables as usual inside a `keras.StatelessScope` that maps each
variable to its value in the state, and the new values (batch-norm statistics, metrics) are
collected from the scope afterwards. The student's input gradient J_S is a `jax.value_and_grad`
over the images nested in this one over the weights (`keras_at.backend.jax.input_gradient`).

The Distiller's `fit`, `evaluate` and `predict` run Keras's loops with its two networks held by
the calling thread (another thread's loop on either is refused), and a label error of the step
raised as the `ValueError` it is. Keras's loops take the weights out of the variables while they
run and put them back at the end; a loop that fails on the way (a bad label in the tenth batch,
an interrupt) would leave both networks without weights. So the compiled steps here do not
donate their state to XLA, and a failed loop puts back the last state it reached: the weights
after the last step that finished, the teacher's unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import threading

import jax
from keras import StatelessScope
from keras.src.backend.jax import trainer as keras_jax_trainer

from keras_at.backend.jax import current_value, value_errors_of_callbacks
from keras_at.step import DistillationStep

# The threads running a Distiller's loop, per network: {id(network): [thread id, depth]}.
_IN_USE = {}
_IN_USE_LOCK = threading.Lock()


@contextlib.contextmanager
def exclusive_networks(networks):
    """Holds `networks` (`{role: model}`) for this thread while a loop of Keras runs them.

    Keras's JAX loops detach every variable's value while they run, hand the arrays to the
    compiled step, and attach the new values at the end, so a network that
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


_JIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _compiled_without_donation():
    """While Keras compiles a step, its `jit` keeps the state's arrays (`donate_argnums` dropped).

    Donated arrays are gone once the step runs, even when it fails (a label error raised by a
    host callback): a failed loop could not put the weights back. The price is memory: for one
    step the state's new arrays (the teacher's weights included, which XLA copies) sit beside
    the old ones; a step's activations are usually far larger.
    """
    keras_jit = getattr(keras_jax_trainer, "jit", None)
    if keras_jit is None:  # another Keras: its loops keep their own ways
        yield
        return
    with _JIT_LOCK:

        @functools.wraps(keras_jit)
        def jit(function, *args, donate_argnums=(), **kwargs):
            del donate_argnums
            return keras_jit(function, *args, **kwargs)

        keras_jax_trainer.jit = jit
        try:
            yield
        finally:
            keras_jax_trainer.jit = keras_jit


class JAXTrainer(DistillationStep):
    """The Distiller's stateless `train_step` and `test_step` on JAX (a base before Model)."""

    # === Keras's loops, guarded ===
    def fit(self, *args, **kwargs):
        with self._guard_loop():
            return super().fit(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        with self._guard_loop():
            return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        with self._guard_loop():
            return super().predict(*args, **kwargs)

    def make_train_function(self, force=False):
        with _compiled_without_donation():
            return super().make_train_function(force)

    def make_test_function(self, force=False):
        with _compiled_without_donation():
            return super().make_test_function(force)

    def make_predict_function(self, force=False):
        with _compiled_without_donation():
            return super().make_predict_function(force)

    @contextlib.contextmanager
    def _guard_loop(self):
        """One of Keras's loops, with its networks held by this thread (`exclusive_networks`),
        a label error raised as a `ValueError` (`value_errors_of_callbacks`), and the weights
        put back if the loop fails (`_restore_detached_values`)."""
        outer = self.__dict__.pop("_detached_values", None)  # of the loop this one runs in
        self.__dict__["_detached_values"] = {}
        with exclusive_networks({"student": self.student, "teacher": self.teacher}):
            try:
                with value_errors_of_callbacks():
                    yield
            except BaseException:
                self._restore_detached_values()
                raise
            finally:
                self.__dict__["_detached_values"] = outer

    def _purge_model_variables(self, **which):
        # Keras detaches the values when a loop starts: keep them until the loop ends (a second
        # copy of the state while the steps replace it), for a loop failing in its first step.
        detached = self.__dict__.get("_detached_values")
        groups = {"trainable_variables": lambda: self.trainable_variables,
                  "non_trainable_variables": lambda: self.non_trainable_variables,
                  "optimizer_variables": lambda: self.optimizer.variables,
                  "metrics_variables": lambda: self.metrics_variables}
        for group, chosen in which.items():
            if chosen and detached is not None:
                for variable in groups[group]():
                    if variable._value is not None:
                        detached[id(variable)] = (variable, variable._value)
        return super()._purge_model_variables(**which)

    def _restore_detached_values(self):
        """After a failed loop: the state of the last step that finished (Keras's `_jax_state`),
        else the values detached when the loop began, for every variable left without one."""
        if getattr(self, "_jax_state", None):
            self._jax_state_synced = False
            self.jax_state_sync()
        self._jax_state = None
        lost = []
        for variable, value in (self.__dict__.get("_detached_values") or {}).values():
            if variable._value is None:
                if getattr(value, "is_deleted", lambda: False)():
                    lost.append(variable.path)
                else:
                    variable._value = value
        if lost:
            raise RuntimeError(
                f"The loop failed after its step consumed the weights of {len(lost)} variables "
                f"({', '.join(lost[:3])}, ...): they are lost; rebuild the networks and load "
                "their weights again."
            )

    # === The stateless step ===
    def _map_state(self, trainable, non_trainable):
        """The scope mapping of the model's variables to the state's values."""
        return [*zip(self.trainable_variables, trainable),
                *zip(self.non_trainable_variables, non_trainable)]

    def _compute_loss_and_updates(self, trainable, non_trainable, data, training):
        """`(total, (logits, terms, new non-trainable values))` of a batch."""
        x, y, sample_weight, cached = data
        with StatelessScope(state_mapping=self._map_state(trainable, non_trainable)) as scope:
            logits, terms = self._compute_terms(x, y, sample_weight, training=training,
                                                cached=cached)
            total = self._compute_total_loss(terms)
        non_trainable = [current_value(v, scope) for v in self.non_trainable_variables]
        return total, (logits, terms, non_trainable)

    def _stateless_update_metrics(self, metrics_variables, data, logits, terms, total):
        """`(logs, new metric values)`: `_update_metrics` on the state's metric values."""
        x, y, sample_weight, _ = data
        with StatelessScope(state_mapping=list(zip(self.metrics_variables,
                                                   metrics_variables))) as scope:
            logs = self._update_metrics(x, y, logits, sample_weight, terms, total)
        return logs, [current_value(v, scope) for v in self.metrics_variables]

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_variables, metrics_variables = state
        data = self._unpack_batch(data)

        def loss(trainable, non_trainable):
            total, aux = self._compute_loss_and_updates(trainable, non_trainable, data,
                                                        training=True)
            with StatelessScope(state_mapping=list(zip(self.optimizer.variables,
                                                       optimizer_variables))):
                scaled = self.optimizer.scale_loss(total)
            return scaled, (total, *aux)

        (_, (total, logits, terms, non_trainable)), gradients = jax.value_and_grad(
            loss, has_aux=True)(trainable, non_trainable)
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, gradients, trainable)
        logs, metrics_variables = self._stateless_update_metrics(
            metrics_variables, data, logits, terms, total)
        return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)

    def test_step(self, state, data):
        trainable, non_trainable, metrics_variables = state
        data = self._unpack_batch(data)
        total, (logits, terms, non_trainable) = self._compute_loss_and_updates(
            trainable, non_trainable, data, training=False)
        logs, metrics_variables = self._stateless_update_metrics(
            metrics_variables, data, logits, terms, total)
        return logs, (trainable, non_trainable, metrics_variables)
