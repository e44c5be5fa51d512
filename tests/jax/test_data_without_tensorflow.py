"""keras_at.data on JAX without TensorFlow: digits loaded as a PyDataset and a Distiller fitted
from it, in a fresh interpreter whose sys.modules shows that nothing imported TensorFlow.

`make test-jax` runs this where TensorFlow is not installed; where it is, `pipeline="numpy"`
asks for the numpy pipeline, and TensorFlow is then hidden (`sys.modules["tensorflow"] = None`,
which `importlib.util.find_spec` reads as not installed) to check what `"auto"` picks. Most
of its time is XLA compiling the WRN-10 training and evaluation steps.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = """
import importlib.util, json, sys

import keras
import numpy as np

import keras_at
from keras_at import data

train = data.load("digits", limit=64, batch_size=32, image_size=16, seed=0, pipeline="numpy")
test = data.load("digits", "test", limit=32, batch_size=16, image_size=16, pipeline="numpy")
images, labels = train[0]
student = keras_at.models.wide_resnet(10, 1, input_shape=(16, 16, 1), num_classes=10)
teacher = keras_at.models.wide_resnet(10, 2, input_shape=(16, 16, 1), num_classes=10)
before = [keras.ops.convert_to_numpy(w).copy() for w in student.trainable_weights]
distiller = keras_at.Distiller(student, teacher, beta=1e3)
distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
history = distiller.fit(train, epochs=2, validation_data=test, verbose=0).history
out = {
    "backend": keras.backend.backend(),
    "type": [type(train).__name__, isinstance(train, keras.utils.PyDataset), len(train)],
    "batch": [list(images.shape), str(images.dtype), str(labels.dtype)],
    "info": [data.info("digits").num_classes, list(data.info("digits").image_shape)],
    "history": {k: [float(v) for v in vs] for k, vs in history.items()},
    "moved": min(float(np.max(np.abs(keras.ops.convert_to_numpy(w) - b)))
                 for w, b in zip(student.trainable_weights, before)),
    "tensorflow": sorted(m for m, module in sys.modules.items()
                         if m.split(".")[0] == "tensorflow" and module is not None),
}
if importlib.util.find_spec("tensorflow") is not None:
    sys.modules["tensorflow"] = None  # as where it is not installed
out["auto"] = type(data.load("digits", "test", limit=8)).__name__
try:
    data.with_teacher_gradients
    out["gradients_error"] = None
except ImportError as error:
    out["gradients_error"] = str(error)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def run():
    env = {**os.environ, "KERAS_BACKEND": "jax", "KERAS_AT_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_distiller_fits_digits_from_the_numpy_pipeline_without_importing_tensorflow(run):
    assert run["backend"] == "jax"
    assert run["tensorflow"] == [], "loading or fitting keras_at.data imported TensorFlow"
    assert run["type"] == ["ArrayDataset", True, 2]
    assert run["batch"] == [[32, 16, 16, 1], "float32", "int32"]
    assert run["info"] == [10, [32, 32, 1]]
    history = run["history"]
    assert {"loss", "task_loss", "at_loss", "val_loss"} <= set(history), history
    assert all(len(v) == 2 and np.isfinite(v).all() for v in history.values()), history
    assert history["at_loss"][0] > 0
    assert run["moved"] > 0  # every trainable weight of the student trained


def test_without_tensorflow_load_gives_the_numpy_pipeline_and_tf_data_says_it_needs_it(run):
    assert run["auto"] == "ArrayDataset"
    assert run["gradients_error"] is not None
    assert run["gradients_error"].startswith(
        "keras_at.data.with_teacher_gradients builds tf.data pipelines, which need TensorFlow")
