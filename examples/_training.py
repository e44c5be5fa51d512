"""The example scripts' experiment: the paper's optimizer, callbacks and `run`.

`run` trains a teacher (given, or trained first), then the student, every epoch logged into the
run directory that `_common.prepare_run_dir` made; the SGD schedule and the callbacks that
write `history.json` and the test error are written once, here.
"""

from __future__ import annotations

import os
import time

import _common  # first: it sets TensorFlow's environment before keras is imported
import keras
import numpy as np
import tensorflow as tf

from keras_at.callbacks import AttentionMapLogger
from keras_at.saving import save_atomically

# === Optimizer ===


def sgd(args, steps_per_epoch: int, epochs: int | None = None) -> keras.optimizers.SGD:
    """The paper's SGD: momentum, no Nesterov, lr x `lr_decay` at each of `lr_epochs`.

    For a run of `epochs` other than `args.epochs` (a teacher trained longer), the decay epochs
    are stretched in proportion. The schedule is per step (the optimizer's iteration counter),
    so it resumes with the optimizer's state. Weight decay is not here but in the models.
    """
    scale = (epochs or args.epochs) / args.epochs
    lr = args.lr
    if args.lr_epochs:
        # The counter is the number of steps already taken: the first step of epoch e is e * n.
        boundaries = [round(e * scale) * steps_per_epoch - 1 for e in args.lr_epochs]
        values = [args.lr * args.lr_decay**i for i in range(len(boundaries) + 1)]
        lr = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    return keras.optimizers.SGD(lr, momentum=args.momentum, nesterov=False)


# === Callbacks ===


class TestError(keras.callbacks.Callback):
    """Logs `test_loss` and `test_error` of the network being trained (a Distiller's student).

    With more than 5 classes, `test_top5_error` too. Every `every` epochs and after the last.

    Only the student runs, in inference mode: a Distiller's own `validation_data` would also
    run the teacher to report the transfer terms, which the error does not need.
    """

    def __init__(self, dataset: tf.data.Dataset, every: int = 1):
        super().__init__()
        self.dataset, self.every = dataset, every
        self._step = None

    def on_train_begin(self, logs=None):
        network = getattr(self.model, "student", self.model)

        @tf.function(autograph=False)
        def step(x, y):
            logits = tf.cast(network(x, training=False), "float32")
            loss = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            y = tf.cast(y, tf.int32)
            k = min(5, logits.shape[-1])
            misses = [tf.logical_not(tf.math.in_top_k(y, logits, top)) for top in (1, k)]
            return [tf.reduce_sum(loss)] + [tf.reduce_sum(tf.cast(m, "float32")) for m in misses]

        self._step = step

    def evaluate(self) -> dict:
        totals, count = np.zeros(3), 0
        for x, y in self.dataset:
            totals += [float(v) for v in self._step(x, y)]
            count += int(tf.shape(y)[0])
        loss, top1, top5 = totals / count
        logs = {"test_loss": loss, "test_error": top1}
        network = getattr(self.model, "student", self.model)
        if network.output.shape[-1] > 5:
            logs["test_top5_error"] = top5
        return logs

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and ((epoch + 1) % self.every == 0 or
                                 epoch + 1 == self.params["epochs"]):
            logs.update(self.evaluate())


class EpochLog(keras.callbacks.Callback):
    """Writes every epoch's logs, learning rate and wall time to `history.json` under `phase`.

    Placed before `BackupAndRestore`, so an epoch is in the file before its backup exists; after
    a resume, the epochs that are run again replace their earlier records.
    """

    def __init__(self, path: str, phase: str):
        super().__init__()
        self.path, self.phase = path, phase

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()
        self._lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        history = _common.read_json(self.path, {})
        records = [r for r in history.get(self.phase, []) if r["epoch"] <= epoch]
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        record["lr"] = self._lr  # at the epoch's first step
        record["seconds"] = time.time() - self._start
        history[self.phase] = records + [record]
        _common.write_json(self.path, history)


def fit(model, train, test, run_dir: str, phase: str, epochs: int, verbose: int = 2,
        schedules=(), attention_images=None, test_every: int = 1) -> list[dict]:
    """Trains `model` (compiled) for `epochs`, resumable; returns the phase's epoch records.

    Callback order matters: schedules and the test error write into the epoch logs before
    the log file, TensorBoard and the progress bar read them, and the backup comes last.
    """
    log_dir = os.path.join(run_dir, "logs", phase)
    history_path = os.path.join(run_dir, "history.json")
    callbacks = [TestError(test, test_every), *schedules, EpochLog(history_path, phase),
                 keras.callbacks.TensorBoard(log_dir, write_graph=False)]
    if attention_images is not None and getattr(model, "pairs", None):
        callbacks.append(AttentionMapLogger(log_dir, attention_images, test_every))
    # Two copies: a process killed while writing one backup resumes from the other.
    backup = os.path.join(run_dir, f"backup_{phase}")
    callbacks.append(keras.callbacks.BackupAndRestore(backup, double_checkpoint=True))
    # shuffle=False: keras_at.data shuffles the train split itself (fit would only warn).
    model.fit(train, epochs=epochs, callbacks=callbacks, verbose=verbose, shuffle=False)
    return _common.read_json(history_path)[phase]


def first_images(dataset: tf.data.Dataset, count: int = 8):
    """The first `count` images of a dataset: the fixed batch whose attention maps are logged."""
    images, _ = next(iter(dataset))
    return images[:count]


# === The experiment: a teacher (given, or trained first), then the student ===


def run(args, script: str, load_data, make_teacher, make_student) -> dict:
    """Runs one experiment into its run directory; returns its history.json contents.

    Args:
        args: parsed flags of `add_training_args`, `add_teacher_args` and
            `add_transfer_args`.
        script: name of the calling script, for the default run directory.
        load_data: `() -> (train, test)` datasets.
        make_teacher, make_student: `() -> keras.Model`, a fresh network to train (with any
            pretrained weights and frozen layers already set).
    """
    run_dir = _common.prepare_run_dir(args, script)
    history_path = os.path.join(run_dir, "history.json")
    done = _common.read_json(history_path, {})
    if "test_error" in done:
        print(f"{run_dir} has finished already: test error {done['test_error']:.4f}.")
        return done
    start = time.time()
    train, test = load_data()
    steps = int(train.cardinality())

    teacher = None
    if _common.transfers(args) or args.teacher_only:
        teacher = load_or_train_teacher(args, run_dir, train, test, make_teacher)
    if args.teacher_only:
        return _finish(run_dir, "teacher", teacher, start)
    keras.utils.set_random_seed(args.seed)
    student = make_student()
    if teacher is None:
        print(f"Training the student {student.name} alone.")
        _train_alone(student, "student", train, test, args, run_dir, args.epochs)
    else:
        model = _common.distiller(student, teacher, args)
        print(f"Training the student {student.name} from {teacher.name}: pairs {model.pairs}, "
              f"beta={args.beta:g}, alpha={args.alpha:g}, hint_beta={args.hint_beta:g}.")
        model.compile(optimizer=sgd(args, steps), metrics=["accuracy"])
        fit(model, train, test, run_dir, "student", args.epochs, args.verbose,
            schedules=_common.beta_schedule(args), attention_images=first_images(test),
            test_every=args.test_every)
        save_atomically(student.save, os.path.join(run_dir, "student.keras"))
    return _finish(run_dir, "student", student, start)


def load_or_train_teacher(args, run_dir, train, test, make_teacher) -> keras.Model:
    """The teacher: `--teacher`'s file, the run's finished `teacher.keras`, or trained here."""
    if args.teacher:
        return keras.saving.load_model(args.teacher)
    path = os.path.join(run_dir, "teacher.keras")
    if os.path.isfile(path):  # a resumed run whose teacher had finished
        return keras.saving.load_model(path)
    keras.utils.set_random_seed(args.seed)
    teacher = make_teacher()
    print(f"Training the teacher {teacher.name} ({teacher.count_params():,} parameters).")
    _train_alone(teacher, "teacher", train, test, args, run_dir,
                 args.teacher_epochs or args.epochs)
    return teacher


def _train_alone(model, phase, train, test, args, run_dir, epochs) -> None:
    """Trains a network on its task alone (a teacher, or the student without transfer)."""
    model.compile(
        optimizer=sgd(args, int(train.cardinality()), epochs),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    fit(model, train, test, run_dir, phase, epochs, args.verbose, test_every=args.test_every)
    save_atomically(model.save, os.path.join(run_dir, f"{phase}.keras"))


def _finish(run_dir, phase, model, start) -> dict:
    """Marks the run finished in history.json: the final test error of `phase`."""
    path = os.path.join(run_dir, "history.json")
    history = _common.read_json(path)
    history["test_error"] = history[phase][-1]["test_error"]
    if "teacher" in history:
        history["teacher_test_error"] = history["teacher"][-1]["test_error"]
    history["seconds"] = time.time() - start  # of this invocation
    _common.write_json(path, history)
    print(f"{model.name} test error: {100 * history['test_error']:.2f}% after "
          f"{len(history[phase])} epochs. Run: {run_dir}")
    return history
