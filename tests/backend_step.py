"""Run by test_backends.py in a fresh process per Keras backend (`KERAS_BACKEND` is read once).

`python backend_step.py DIR`: one training step of the Distiller per configuration, from the
weights in DIR. The first backend to run (TensorFlow) builds the
networks, hint adapters included, and saves each configuration's Distiller weights as
DIR/<name>.weights.h5 before its step; a later backend loads them, so both start equal. Writes
DIR/<backend>.npz: each configuration's logged losses, and the student's weights (batch-norm
statistics too) before and after the step.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_at  # noqa: E402
from keras_at.models import wide_resnet  # noqa: E402

# Every term, in two steps: the teacher's three, and the four built on input gradients (double
# backprop, through batch norm). Each term's loss is logged apart; the weights are chosen so
# that each term moves the weights as much as the task loss does.
CONFIGS = {
    "teacher_terms": {"beta": 1e2, "alpha": 0.5, "hint_beta": 10.0},
    "gradient_terms": {"beta": 0.0, "grad_beta": 10.0, "symmetry_beta": 10.0,
                       "input_grad_penalty": 10.0, "symmetry_output_beta": 1.0},
}


def main(directory):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 4, size=8)
    out = {}
    for name, weights in CONFIGS.items():
        keras.utils.set_random_seed(0)
        student = wide_resnet(10, 1, input_shape=(8, 8, 3), num_classes=4, weight_decay=5e-4)
        teacher = wide_resnet(10, 2, input_shape=(8, 8, 3), num_classes=4)
        distiller = keras_at.Distiller(student, teacher, **weights)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        path = os.path.join(directory, f"{name}.weights.h5")
        if os.path.exists(path):
            distiller.load_weights(path)
        else:
            distiller.save_weights(path)
        for variable in student.weights:
            out[f"{name}/initial/{variable.path}"] = keras.ops.convert_to_numpy(variable)
        logs = distiller.train_on_batch(x, y, return_dict=True)
        for key, value in logs.items():
            out[f"{name}/train/{key}"] = np.float64(value)
        for variable in student.weights:  # trainable, and the batch-norm statistics
            out[f"{name}/after/{variable.path}"] = keras.ops.convert_to_numpy(variable)
    np.savez(os.path.join(directory, f"{keras.backend.backend()}.npz"), **out)


if __name__ == "__main__":
    main(sys.argv[1])
