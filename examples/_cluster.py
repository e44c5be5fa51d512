"""--multi-worker: an example script's run over several machines (MultiWorkerMirroredStrategy).

Every worker runs the same command; `TF_CONFIG` says which one it is. Worker 0 (the chief)
writes the run directory `--out`; the others train with it but write into a private temporary
directory, except that they read the chief's backups to resume, so `--out` must be storage
every worker sees (one host, or a shared file system) when a run is to be resumed.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import tempfile

import _training
import tensorflow as tf

from keras_at.trainers.tensorflow._multi_worker import is_chief


def add_multi_worker_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--multi-worker", action="store_true",
                        help="train over the workers named in $TF_CONFIG (the same command on "
                        "each; needs --teacher and --out)")


def strategy(args) -> tf.distribute.MultiWorkerMirroredStrategy:
    """The strategy from `TF_CONFIG`, after checking that this run can use it."""
    if not os.environ.get("TF_CONFIG"):
        raise SystemExit("--multi-worker reads the cluster from $TF_CONFIG, which is not set.")
    cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    if not cluster.get("worker") and not cluster.get("chief"):
        raise SystemExit("--multi-worker: $TF_CONFIG names no workers.")
    if not args.teacher or args.teacher_only or not _training.transfers(args):
        # A network trained alone runs plain keras.Model.fit, which fails under this strategy
        # on Keras 3.15 (keras-team/keras issue 20585); only the Distiller works around it.
        raise SystemExit("--multi-worker trains a student from a trained --teacher only.")
    if not args.out:
        raise SystemExit("--multi-worker needs --out: every worker must name the same run.")
    # Collective ops are configured here, before TensorFlow runs anything else.
    return tf.distribute.MultiWorkerMirroredStrategy()


def run_dir(args, mirror) -> str:
    """`--out` on the chief; elsewhere a private directory whose student backup is the chief's."""
    if is_chief(mirror):
        return args.out
    private = tempfile.mkdtemp(prefix="keras-at-worker-")
    atexit.register(shutil.rmtree, private, ignore_errors=True)
    os.symlink(os.path.abspath(os.path.join(args.out, "backup_student")),
               os.path.join(private, "backup_student"))
    args.resume = True  # the private directory is not empty (the link): not a clash
    return private
