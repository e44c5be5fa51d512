"""One trainer of the Distiller per Keras backend, each deriving from the shared step.

`keras_at.step.DistillationStep` computes a batch's terms, their total and logs, written once
with `keras.ops`; each trainer adds its backend's differentiation and loop plumbing, as Keras's
own trainers subclass `keras/src/trainers/trainer.py` in `keras/src/backend/<name>/trainer.py`:

- `TensorFlowTrainer` (`tensorflow/trainer.py`): `train_step` / `test_step` on a
  `tf.GradientTape`, `tf.distribute`, `MultiWorkerMirroredStrategy` (`tensorflow/_multi_worker.py`);
- `JAXTrainer` (`jax/trainer.py`): a stateless step of `jax.value_and_grad`, Keras's loops held
  by one thread.

`Trainer` is the one for `keras.backend.backend()`, as `keras/src/models/model.py` picks Keras's;
on another backend, importing keras_at works, and constructing a Distiller names the two it runs
on.
"""

from __future__ import annotations

import keras

BACKEND = keras.backend.backend()

if BACKEND == "tensorflow":
    from keras_at.trainers.tensorflow.trainer import TensorFlowTrainer as Trainer
elif BACKEND == "jax":
    from keras_at.trainers.jax.trainer import JAXTrainer as Trainer
else:
    from keras_at.trainers.unsupported import UnsupportedTrainer as Trainer

__all__ = ["BACKEND", "Trainer"]
