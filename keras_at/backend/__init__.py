"""The Distiller's backend plumbing, one module per Keras backend.

What the step computes (which terms, their total: `keras_at.terms`; the Distiller's shared
`_unpack`, `_terms`, `_total` and `_record`) is written once, with `keras.ops`. What differs
between backends is the plumbing around it, as in Keras's own trainers
(`keras/src/backend/<name>/trainer.py`):

- `Trainer`: the Distiller's `train_step` and `test_step` (a `tf.GradientTape` and
  `tf.distribute` on TensorFlow; a stateless step of `jax.value_and_grad` on JAX);
- `input_gradient(tap, function, x)`: the gradient of a scalar function of the images with
  respect to them, inside the step's own differentiation (double backprop);
- `compiled(function, variables)`: a function of tensors compiled once and reading the
  variables' current values at each call (the teacher's J_T);
- `check_labels(y, classes, whole)`: the step's label check, which must run inside the
  compiled step (the labels' values are not known while it is traced);
- `replicas()`: the number of replicas one loss value is summed over.

`keras_at.backend.tensorflow` and `keras_at.backend.jax` each define all of them; this
package exports the one for `keras.backend.backend()`. On another backend, importing
keras_at works, and constructing a Distiller names the two it runs on.
"""

from __future__ import annotations

import keras

BACKEND = keras.backend.backend()

if BACKEND == "tensorflow":
    from keras_at.backend.tensorflow import (
        Trainer,
        check_labels,
        compiled,
        input_gradient,
        replicas,
    )
elif BACKEND == "jax":
    from keras_at.backend.jax import Trainer, check_labels, compiled, input_gradient, replicas
else:
    from keras_at.backend.unsupported import (
        Trainer,
        check_labels,
        compiled,
        input_gradient,
        replicas,
    )

__all__ = ["BACKEND", "Trainer", "check_labels", "compiled", "input_gradient", "replicas"]
