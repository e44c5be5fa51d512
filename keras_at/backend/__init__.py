"""The primitives the step's maths needs from the Keras backend, one module per backend.

The maths (`keras_at.losses`, `keras_at.gradient_at`, `keras_at.terms`) is written once with
`keras.ops`; these few functions are what it cannot write that way. The step's drivers, which
differentiate the total and run Keras's loops, are above the Distiller's logic, in
`keras_at.trainers`.

- `input_gradient(tap, function, x)`: the gradient of a scalar function of the images with
  respect to them, inside the step's own differentiation (double backprop);
- `compiled(function, variables)`: a function of tensors compiled once and reading the
  variables' current values at each call (the teacher's J_T);
- `check_labels(y, classes, whole, ignore_class)`: the step's label check, which must run
  inside the compiled step (the labels' values are not known while it is traced);
- `check_same_batch(student, teacher, message)`: two tensors' batch sizes compared inside the
  compiled step, where they were unknown while it was traced (TensorFlow);
- `linear_map(function, x)`: `function(x)` for a map linear in the images (a resize),
  differentiable twice, as gradient AT differentiates the student's input gradient;
- `replicas()`: the number of replicas one loss value is summed over.

`keras_at.backend.tensorflow` and `keras_at.backend.jax` each define all of them; this
package exports the one for `keras.backend.backend()`; on another backend each refuses, naming
the two it runs on.
"""

from __future__ import annotations

import keras

BACKEND = keras.backend.backend()

if BACKEND == "tensorflow":
    from keras_at.backend import tensorflow as _impl
elif BACKEND == "jax":
    from keras_at.backend import jax as _impl
else:
    from keras_at.backend import unsupported as _impl

check_labels = _impl.check_labels
check_same_batch = _impl.check_same_batch
compiled = _impl.compiled
input_gradient = _impl.input_gradient
linear_map = _impl.linear_map
replicas = _impl.replicas

__all__ = ["BACKEND", "check_labels", "check_same_batch", "compiled", "input_gradient",
           "linear_map", "replicas"]
