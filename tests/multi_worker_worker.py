"""One worker of a 2-worker `MultiWorkerMirroredStrategy` cluster, run by test_multi_worker.py.

`python multi_worker_worker.py OUT_JSON MODE DIR [IMAGE_FOLDER]`, with `TF_CONFIG` naming this
worker. Each worker has one CPU device, so the cluster has two replicas. Modes:

- `first`: plain Keras's `fit` (its error, if any, recorded as `plain`), the Distiller's
  `evaluate`, `fit` and `predict` on arrays, `fit` on an in-memory pipeline, and all three on
  IMAGE_FOLDER's pipelines, recording the files decoded, and (not in `single`) a student with
  BatchNorm, saved to DIR/bn_student<worker index>.keras (results to OUT_JSON); then 3 epochs
  with BackupAndRestore
  in DIR/backup, TensorBoard and AttentionMapLogger in DIR/logs<worker index> (results to
  OUT_JSON.backup.json). `$KERAS_AT_CRASH_AT="worker:epoch:batch"` SIGKILLs that worker before
  that batch.
- `resume`: the 3 epochs again, resumed from DIR/backup.
- `single`: `first` in one process on one device, without crash: the reference.
"""

import hashlib
import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

MODE = sys.argv[2]
if MODE != "single":
    # Collective ops must be configured before TensorFlow runs anything.
    STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()
else:
    STRATEGY = tf.distribute.get_strategy()

import keras  # noqa: E402
import numpy as np  # noqa: E402
from conftest import plain_net as net  # noqa: E402  (no BN: one process's batch would differ)

import keras_at  # noqa: E402
from keras_at.data import folders  # noqa: E402
from keras_at.models import BatchNorm  # noqa: E402

BATCH = 16  # the global batch: 8 examples per worker
DECODED = []  # the SHA-1 of each file this process decodes (folders.decode, spied on below)
_decode = folders.decode


def _spied_decode(contents):
    """`folders.decode`, recording what it decodes: which files a worker's pipeline reads."""

    def record(data):
        DECODED.append(hashlib.sha1(data.numpy()).hexdigest())
        return 0

    with tf.control_dependencies([tf.py_function(record, [contents], tf.int32)]):
        return _decode(contents)


folders.decode = _spied_decode


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16, 16, 3)).astype("float32")
    return x, rng.integers(0, 5, size=64)


def make():
    keras.utils.set_random_seed(1)
    with STRATEGY.scope():
        distiller = keras_at.Distiller(net(4, "s"), net(8, "t"), alpha=0.5)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"])
    return distiller


def plain_keras(x, y):
    """The upstream failure (keras-team/keras issue 20585): "ok" once Keras handles it."""
    with STRATEGY.scope():
        model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(),
                                  keras.layers.Dense(5)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    try:
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
        model.evaluate(x, y, batch_size=BATCH, verbose=0)
    except Exception as error:  # noqa: BLE001 - recorded for the expected-failure test
        return f"{type(error).__name__}: {str(error)[:200]}"
    return "ok"


def weights(model):
    return [w.tolist() for w in model.get_weights()]


def bn_net(width, name):
    """`net` with BatchNorms, the first on the images."""
    inputs = keras.Input((16, 16, 3))
    x = BatchNorm(momentum=0.5, name="bn_in")(inputs)
    x = keras.layers.Conv2D(width, 3, padding="same")(x)
    x = BatchNorm(momentum=0.5)(x)
    x = keras.layers.ReLU(name="group0")(x)
    x = keras.layers.Conv2D(2 * width, 3, strides=2, padding="same", activation="relu",
                            name="group1")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5)(x), name=name)


def batch_norm_checks(directory):
    """A student with BatchNorm, trained on the workers' halves of each batch (the second
    shifted by +1), and saved by each worker: every weight as `get_weights` reads it and this
    worker's own copy (what it computes with), predictions under the strategy and from the
    saved file on this worker alone."""
    x, y = data()
    x[np.arange(len(x)) % BATCH >= BATCH // 2] += 1.0
    keras.utils.set_random_seed(1)
    with STRATEGY.scope():
        distiller = keras_at.Distiller(bn_net(4, "s"), net(8, "t"), alpha=0.5)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    distiller.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    student = distiller.student
    # Every worker saves: reading the statistics is a reduction over all workers.
    path = os.path.join(directory, f"bn_student{STRATEGY.cluster_resolver.task_id}.keras")
    student.save(path)
    saved = keras.saving.load_model(path)  # outside the strategy: on this worker alone
    return {
        "path": path,
        "weights": {w.path: w.numpy().tolist() for w in student.weights},
        "copies": {w.path: [c.numpy().tolist() for c in w.value.values]
                   for w in student.weights},
        "predict": distiller.predict(x[:BATCH], batch_size=BATCH, verbose=0).tolist(),
        "saved_predict": saved.predict(x[:BATCH], batch_size=BATCH, verbose=0).tolist(),
    }


def fit_checks():
    """plain Keras, then the Distiller's evaluate, fit (2 epochs) and predict."""
    x, y = data()
    result = {}
    if MODE != "single":
        result["plain"] = plain_keras(x, y)
        result["replicas"] = STRATEGY.num_replicas_in_sync
    distiller = make()
    teacher = weights(distiller.teacher)
    result["evaluate"] = distiller.evaluate(x, y, batch_size=BATCH, verbose=0,
                                            return_dict=True)
    history = distiller.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    result["history"] = history.history
    result["predict"] = distiller.predict(x, batch_size=BATCH, verbose=0).tolist()
    result["student"] = weights(distiller.student)
    result["teacher_unchanged"] = all(
        np.array_equal(a, b) for a, b in zip(teacher, weights(distiller.teacher))
    )
    # A keras_at.data pipeline: sharded across the workers, global batch = its batch_size.
    pixels = np.random.default_rng(2).integers(0, 256, size=(64, 16, 16, 3), dtype=np.uint8)
    pipeline = keras_at.data.from_arrays(pixels, y, batch_size=BATCH, shuffle=True, seed=3,
                                         mean=(0.5,) * 3, std=(0.25,) * 3)
    with STRATEGY.scope():
        try:  # without a seed, each worker would keep its share of another order
            keras_at.data.from_arrays(pixels, y, batch_size=BATCH, shuffle=True)
            result["unseeded"] = "accepted"
        except ValueError as error:
            result["unseeded"] = str(error)
    distiller = make()
    result["pipeline"] = distiller.fit(pipeline, epochs=1, verbose=0).history
    result["pipeline_student"] = weights(distiller.student)
    result["folder"] = folder_checks(sys.argv[4], distiller)
    if MODE != "single":
        result["batch_norm"] = batch_norm_checks(sys.argv[3])
    return result


class Steps(keras.callbacks.Callback):
    """The training steps run in each epoch."""

    def on_train_begin(self, logs=None):
        self.counts = []

    def on_epoch_begin(self, epoch, logs=None):
        self.counts.append(0)

    def on_train_batch_end(self, batch, logs=None):
        self.counts[-1] += 1


def folder_checks(root, distiller):
    """An image folder's pipelines: `distiller`'s fit (with validation), evaluate and predict,
    and the files each decodes. `distiller` is the in-memory pipeline's, trained on (a new one
    would cost the test time). Train: 16 images in global batches of 6, 6 and 4; test: 8 in 6
    and 2. (No worker's piece is empty: with oneDNN, TF 2.21's CPU Conv2D fails on a batch
    of 0.)"""
    train = keras_at.data.load(root, "train", batch_size=6, seed=4, image_size=16)
    test = keras_at.data.load(root, "test", batch_size=6, image_size=16)
    del DECODED[:]  # load() decoded every file once, to check it
    steps = Steps()
    history = distiller.fit(train, validation_data=test, epochs=2, verbose=0, callbacks=[steps])
    result = {"history": history.history, "steps": steps.counts, "fit_decoded": DECODED[:],
              "student": weights(distiller.student)}
    del DECODED[:]
    result["evaluate"] = distiller.evaluate(test, verbose=0, return_dict=True)
    result["predict"] = distiller.predict(test, verbose=0).tolist()
    result["test_decoded"] = DECODED[:]
    return result


class Crash(keras.callbacks.Callback):
    """Kills this process (SIGKILL: no cleanup) before batch `batch` of epoch `epoch`."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def backup_fit(directory):
    """3 epochs with BackupAndRestore, TensorBoard and AttentionMapLogger (crash if asked)."""
    x, y = data()
    distiller = make()
    teacher = weights(distiller.teacher)
    index = STRATEGY.cluster_resolver.task_id if MODE != "single" else "single"
    logs = os.path.join(directory, f"logs{index}")  # one directory per worker, to tell apart
    callbacks = [keras.callbacks.BackupAndRestore(os.path.join(directory, "backup")),
                 keras.callbacks.TensorBoard(logs),
                 keras_at.callbacks.AttentionMapLogger(logs, x[:2])]
    crash = os.environ.get("KERAS_AT_CRASH_AT")  # "worker:epoch:batch"
    if crash and MODE != "single":
        worker, epoch, batch = map(int, crash.split(":"))
        if worker == index:
            callbacks.append(Crash(epoch, batch))
    history = distiller.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
                            callbacks=callbacks)
    return {"epochs": history.epoch, "student": weights(distiller.student),
            "teacher_unchanged": all(np.array_equal(a, b) for a, b in
                                     zip(teacher, weights(distiller.teacher)))}


def write(path, result):
    with open(path + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(path + ".tmp", path)


def main():
    out, directory = sys.argv[1], sys.argv[3]
    if MODE not in ("first", "resume", "single"):
        raise SystemExit(f"unknown mode {MODE!r}")
    if MODE != "resume":
        write(out, fit_checks())
    write(out + ".backup.json", backup_fit(directory))


if __name__ == "__main__":
    main()
