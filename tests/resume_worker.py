"""Run by test_reliability.py: a Distiller fit under BackupAndRestore that may SIGKILL itself.

Usage: resume_worker.py BACKUP_DIR OUT_PREFIX EPOCHS [KILL_EPOCH KILL_BATCH]
Writes OUT_PREFIX.npz (the student's final weights) and OUT_PREFIX.json (history).
"""

import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_at  # noqa: E402
from keras_at.callbacks import BetaDecay  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from conftest import tiny_net  # noqa: E402


class KillAt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


def main():
    backup_dir, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 5, size=96)
    distiller = keras_at.Distiller(tiny_net(4, "s"), tiny_net(8, "t"), alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    callbacks = [keras.callbacks.BackupAndRestore(backup_dir),
                 BetaDecay(factor=0.5, epochs=(1, 2, 3))]
    if len(sys.argv) > 4:
        callbacks.append(KillAt(int(sys.argv[4]), int(sys.argv[5])))
    history = distiller.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0,
                            callbacks=callbacks)
    np.savez(out + ".npz", *distiller.student.get_weights())
    with open(out + ".json", "w") as f:
        json.dump({"epochs": history.epoch, "history": history.history}, f)


if __name__ == "__main__":
    main()
