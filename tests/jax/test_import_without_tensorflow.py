"""keras_at on JAX never loads TensorFlow: imported, fitted on numpy arrays, evaluated, predicting.

`make test-jax` runs this in `.venv-jax`, where TensorFlow is not installed. With
`KERAS_BACKEND=jax` the first test also means something where TensorFlow is installed: nothing
may import it. The parts that need TensorFlow (keras_at.data's tf.data pipelines,
AttentionMapLogger's TensorBoard events) say so where it is missing; keras_at.data's numpy
pipeline is tests/jax/test_data_without_tensorflow.py.

One fresh interpreter does all of it (`SCRIPT`): its sys.modules holds only what keras_at and
the fit loaded, and its two networks are built once (on JAX, each new weight shape is an XLA
compile of its initializer).
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import slow_fixture

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

without_tensorflow = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is not None,
    reason="TensorFlow is installed here; `make test-jax` runs this where it is not",
)

# Not seeded: keras.utils.set_random_seed imports TensorFlow where it is installed (to seed it).
SCRIPT = """
import importlib.util, json, os, sys

import keras
import numpy as np

import keras_at

rng = np.random.default_rng(0)
x = rng.normal(size=(16, 8, 8, 3)).astype("float32")
y = rng.integers(0, 4, size=16)
student = keras_at.models.wide_resnet(10, 1, input_shape=(8, 8, 3), num_classes=4)
teacher = keras_at.models.wide_resnet(10, 2, input_shape=(8, 8, 3), num_classes=4)
before = [keras.ops.convert_to_numpy(w).copy() for w in student.trainable_weights]
teacher_before = [keras.ops.convert_to_numpy(w).copy() for w in teacher.weights]
distiller = keras_at.Distiller(student, teacher, beta=1e3)
distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0).history
evaluated = distiller.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
predicted = distiller.predict(x, batch_size=8, verbose=0)
out = {
    "backend": keras.backend.backend(),
    "history": {k: [float(v) for v in vs] for k, vs in history.items()},
    "evaluated": {k: float(v) for k, v in evaluated.items()},
    "predicted": [list(predicted.shape), bool(np.all(np.isfinite(predicted)))],
    "moved": [float(np.max(np.abs(keras.ops.convert_to_numpy(w) - b)))
              for w, b in zip(student.trainable_weights, before)],
    "teacher_moved": [float(np.max(np.abs(keras.ops.convert_to_numpy(w) - b)))
                      for w, b in zip(teacher.weights, teacher_before)],
    "tensorflow": sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"),
}
if importlib.util.find_spec("tensorflow") is None:  # what needs it says so
    try:
        keras_at.data.with_teacher_gradients
        out["data_error"] = None
    except ImportError as error:
        out["data_error"] = str(error)
    logs = sys.argv[1]
    logger = keras_at.callbacks.AttentionMapLogger(logs, x[:4])
    try:
        distiller.fit(x, y, batch_size=8, callbacks=[logger], verbose=0)
        out["logger_error"] = None
    except ImportError as error:
        out["logger_error"] = str(error)
    out["logger_wrote"] = os.path.exists(logs)
print(json.dumps(out))
"""


@slow_fixture(scope="module")  # a Python process
def run(tmp_path_factory):
    logs = tmp_path_factory.mktemp("jax") / "logs"
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(logs)], env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_distiller_fits_numpy_arrays_on_jax_without_importing_tensorflow(run):
    assert run["backend"] == "jax"
    assert run["tensorflow"] == [], "keras_at on JAX imported TensorFlow"
    history = run["history"]
    assert {"loss", "task_loss", "at_loss"} <= set(history), history
    assert all(np.isfinite(v).all() for v in history.values()), history
    assert history["at_loss"][0] > 0  # a random teacher's maps differ from the student's
    assert {"loss", "task_loss", "at_loss"} <= set(run["evaluated"]), run["evaluated"]
    assert all(np.isfinite(v) for v in run["evaluated"].values()), run["evaluated"]
    assert run["predicted"] == [[16, 4], True]
    assert all(m > 0 for m in run["moved"])  # every trainable weight of the student trained
    assert max(run["teacher_moved"]) == 0  # and the teacher did not, statistics included


@without_tensorflow
def test_data_pipelines_say_they_need_tensorflow(run):
    assert run["data_error"] is not None, "with_teacher_gradients imported without TensorFlow"
    assert ("keras_at.data.with_teacher_gradients builds tf.data pipelines, which need "
            "TensorFlow") in run["data_error"]


@without_tensorflow
def test_attention_map_logger_says_it_needs_tensorflow(run):
    assert run["logger_error"] is not None, "AttentionMapLogger ran without TensorFlow"
    assert run["logger_error"].startswith("AttentionMapLogger writes TensorBoard event files")
    assert "tf.summary, which needs TensorFlow" in run["logger_error"]
    assert not run["logger_wrote"]
