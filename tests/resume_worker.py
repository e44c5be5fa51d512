"""Run by test_reliability.py: a Distiller fit under a BackupAndRestore that may SIGKILL itself.

Usage: resume_worker.py BACKUP_DIR OUT_PREFIX EPOCHS [--save-freq N] [--keras-backup]
                        [--kill-batch EPOCH BATCH | --kill-in-save N | --kill-before-metadata N]
Writes OUT_PREFIX.npz (the student's final weights) and OUT_PREFIX.json (history). `--kill-batch`
kills the process after that batch; `--kill-in-save N` kills it in the middle of writing the N-th
backup, after some layers are in the file and before the rest; `--kill-before-metadata N` kills
it once the N-th backup's weights file is in place, before its training_metadata.json is written.
"""

import argparse
import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_at  # noqa: E402
from keras_at.callbacks import BetaDecay, BetaScheduler  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from conftest import AtBatch, tiny_net  # noqa: E402


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def kill_in_save(layer, n):
    """Makes the n-th write of `layer`'s variables (one per save of the Distiller) kill us."""
    save, calls = layer.save_own_variables, []

    def save_or_die(store):
        calls.append(1)
        if len(calls) == n:
            die()
        save(store)

    layer.save_own_variables = save_or_die


def kill_before_metadata(n):
    """Makes the n-th write of keras_at's training_metadata.json kill us before it starts."""
    import keras_at.callbacks.backup_and_restore as backup

    write, calls = backup.write_text_atomically, []

    def write_or_die(path, text):
        calls.append(1)
        if len(calls) == n:
            die()
        write(path, text)

    backup.write_text_atomically = write_or_die


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("backup_dir")
    parser.add_argument("out")
    parser.add_argument("epochs", type=int)
    parser.add_argument("--save-freq", type=int, default=None)
    parser.add_argument("--keras-backup", action="store_true")
    parser.add_argument("--kill-batch", type=int, nargs=2)
    parser.add_argument("--kill-in-save", type=int)
    parser.add_argument("--kill-before-metadata", type=int)
    args = parser.parse_args()
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 5, size=96)
    distiller = keras_at.Distiller(tiny_net(4, "s"), tiny_net(8, "t"), alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    backup = keras.callbacks.BackupAndRestore if args.keras_backup else (
        keras_at.callbacks.BackupAndRestore)
    callbacks = [backup(args.backup_dir, save_freq=args.save_freq or "epoch"),
                 BetaDecay(factor=0.5, epochs=(1, 2, 3)),
                 BetaScheduler(lambda epoch, alpha: 0.8 * alpha, weight="alpha")]
    if args.kill_batch:
        callbacks.append(AtBatch(*args.kill_batch, lambda model: die()))
    if args.kill_in_save:
        kill_in_save(distiller.teacher.get_layer("head"), args.kill_in_save)
    if args.kill_before_metadata:
        kill_before_metadata(args.kill_before_metadata)
    history = distiller.fit(x, y, batch_size=24, epochs=args.epochs, shuffle=False, verbose=0,
                            callbacks=callbacks)
    np.savez(out_path := args.out + ".npz", *distiller.student.get_weights())
    with open(args.out + ".json", "w") as f:
        json.dump({"epochs": history.epoch, "history": history.history, "npz": out_path}, f)


if __name__ == "__main__":
    main()
