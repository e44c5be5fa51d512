"""The example scripts' experiment: the Distiller of the flags, the authors' optimizer
schedule, callbacks and `run`.

`run` trains a teacher (given, or trained first), then the student, every epoch logged into the
run directory that `_common.prepare_run_dir` made; the SGD schedule and the callbacks that
write `history.json` and the test error are written once, here.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

import _common  # first: it sets TensorFlow's environment before keras is imported
import keras
import numpy as np

import keras_at
from keras_at.callbacks import AttentionMapLogger, BetaDecay, BetaScheduler
from keras_at.saving import save_atomically

# === The Distiller of the flags ===


def transfers(args) -> bool:
    """Whether the student learns from a teacher at all."""
    return args.beta > 0 or args.alpha > 0 or args.hint_beta > 0


def distiller(student, teacher, args) -> keras_at.Distiller:
    """The Distiller of the flags; F-ActT's adapters get the student's coupled weight decay."""
    return keras_at.Distiller(
        student, teacher, pairs=args.pairs, beta=args.beta, p=args.p,
        reduction=args.attention, alpha=args.alpha, temperature=args.temperature,
        hint_beta=args.hint_beta, hint_weight_decay=args.weight_decay,
    )


def beta_schedule(args, drops) -> list:
    """A `BetaDecay` of `beta` and of `hint_beta`, each when it decays (`--beta-decay`).

    They decay at `drops`, the learning-rate drops' epoch indices (`drop_epochs`): by
    default beta when AT is combined with KD, and hint_beta whenever F-ActT is on; AT alone
    never decays.
    """
    defaults = {"beta": args.beta > 0 and args.alpha > 0, "hint_beta": True}
    decays = []
    for weight, decays_by_default in defaults.items():
        factor = args.beta_decay
        if factor is None:
            factor = 0.2 if decays_by_default else 1.0
        if factor != 1.0 and getattr(args, weight) > 0 and drops:
            decays.append(BetaDecay(factor=factor, epochs=drops, weight=weight))
    return decays


# === Optimizer ===


def drop_epochs(args, epochs: int | None = None) -> tuple[int, ...]:
    """Indices (from 0) of the first epoch at each lowered learning rate, the authors' counting.

    `--lr-epochs` is the authors' `epoch_step`: their torchnet loop lowers the rate when
    `state['epoch'] + 1`, the number (from 1) of the epoch about to run, is listed, so
    60,120,160 runs epochs 1-59 at 0.1 and 60-119 (indices 59-118) at 0.02. For a run of
    `epochs` other than `args.epochs` (a teacher trained longer), the epochs before each drop
    are stretched in proportion.
    """
    if any(e < 1 for e in args.lr_epochs):
        raise ValueError(f"--lr-epochs counts epochs from 1 (the authors' epoch_step), got "
                         f"{','.join(map(str, args.lr_epochs))}.")
    scale = (epochs or args.epochs) / args.epochs
    return tuple(round((e - 1) * scale) for e in args.lr_epochs)


def sgd(args, steps_per_epoch: int, epochs: int | None = None) -> keras.optimizers.SGD:
    """The authors' SGD: momentum (Nesterov with `--nesterov`), lr x `lr_decay` at `drop_epochs`.

    The schedule is per step (the optimizer's iteration counter), so it resumes with the
    optimizer's state. With `args.momentum_reset` (the default) the momentum is zeroed at each
    drop (`MomentumReset`, which `fit` adds), as the authors' code does by creating a new
    optimizer there. Weight decay is not here but in the models.
    """
    optimizer = keras.optimizers.SGD(lr_schedule(args, steps_per_epoch, epochs),
                                     momentum=args.momentum,
                                     nesterov=getattr(args, "nesterov", False))
    # Configuration, not progress: read by MomentumReset with the epoch index it is given.
    reset = getattr(args, "momentum_reset", True)
    optimizer.momentum_reset_epochs = drop_epochs(args, epochs) if reset else ()
    return optimizer


def lr_schedule(args, steps_per_epoch: int, epochs: int | None = None):
    """`sgd`'s learning rate: `args.lr`, x `args.lr_decay` from each of `drop_epochs` on."""
    first = drop_epochs(args, epochs)
    if not first:
        return args.lr
    # The counter is the number of steps already taken: the first step of epoch k is k * n.
    boundaries = [k * steps_per_epoch - 1 for k in first]
    values = [args.lr * args.lr_decay**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


class MomentumReset(keras.callbacks.Callback):
    """Zeroes SGD's momentum at the start of the epochs the optimizer lists (`sgd`).

    The authors' code creates a new `torch.optim.SGD` at each learning-rate drop, so the first
    step at the new rate starts from an empty momentum buffer; here the buffers are zeroed
    instead. A function of the epoch index only: a run resumed by `BackupAndRestore` at a drop
    epoch zeroes them again, before that epoch's first step, as the uninterrupted run did.
    With the buffers empty at each drop, Keras's momentum (which holds lr-scaled steps) and
    Torch's (which holds gradients) give the same updates for the same gradients.
    """

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if epoch not in getattr(optimizer, "momentum_reset_epochs", ()):
            return
        for momentum in getattr(optimizer, "momentums", None) or ():
            momentum.assign(keras.ops.zeros(momentum.shape, momentum.dtype))


# === Callbacks ===


class TestError(keras.callbacks.Callback):
    """Logs `test_loss` and `test_error` of the network being trained (a Distiller's student).

    With more than 5 classes, `test_top5_error` too. Every `every` epochs and after the last.

    Only the student runs, in inference mode: a Distiller's own `validation_data` would also
    run the teacher to report the transfer terms, which the error does not need.
    """

    def __init__(self, dataset, every: int = 1):
        super().__init__()
        self.dataset, self.every = dataset, every
        self._step = None

    def on_train_begin(self, logs=None):
        self._step = evaluation_step(getattr(self.model, "student", self.model))

    def evaluate(self) -> dict:
        # On JAX, reading `self.model` first puts the trained weights back into the variables.
        network = getattr(self.model, "student", self.model)
        totals, count = np.zeros(3), 0
        for x, y in self.dataset:
            totals += [float(v) for v in self._step(x, y)]
            count += int(keras.ops.shape(y)[0])
        loss, top1, top5 = totals / count
        logs = {"test_loss": loss, "test_error": top1}
        if network.output.shape[-1] > 5:
            logs["test_top5_error"] = top5
        return logs

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and ((epoch + 1) % self.every == 0 or
                                 epoch + 1 == self.params["epochs"]):
            logs.update(self.evaluate())


def evaluation_step(network):
    """`(x, y) -> [sum of losses, top-1 misses, top-5 misses]` of `network` in inference mode,
    compiled: a `tf.function` on TensorFlow, `jax.jit` of its stateless call on JAX (which
    reads the weights as arguments, so each call sees the current ones)."""

    def sums(logits, y):
        logits = keras.ops.cast(logits, "float32")
        loss = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        y = keras.ops.cast(y, "int32")
        k = min(5, logits.shape[-1])
        misses = [keras.ops.logical_not(keras.ops.in_top_k(y, logits, top)) for top in (1, k)]
        return [keras.ops.sum(loss)] + [keras.ops.sum(keras.ops.cast(m, "float32"))
                                        for m in misses]

    if keras.backend.backend() == "jax":
        import jax

        @jax.jit
        def stateless(trainable, non_trainable, x, y):
            logits, _ = network.stateless_call(trainable, non_trainable, x, training=False)
            return sums(logits, y)

        def step(x, y):
            # np.asarray: tf.data's tensors too, where TensorFlow is installed beside JAX.
            return stateless([v.value for v in network.trainable_variables],
                             [v.value for v in network.non_trainable_variables],
                             np.asarray(x), np.asarray(y))

        return step
    import tensorflow as tf

    return tf.function(lambda x, y: sums(network(x, training=False), y), autograph=False)


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
    Without TensorFlow, which writes TensorBoard's event files, there are no logs/ (one line
    says so: `note_tensorboard`).
    """
    log_dir = os.path.join(run_dir, "logs", phase)
    history_path = os.path.join(run_dir, "history.json")
    callbacks = [TestError(test, test_every), MomentumReset(), *schedules,
                 EpochLog(history_path, phase)]
    if tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(log_dir, write_graph=False))
        if attention_images is not None and getattr(model, "pairs", None):
            callbacks.append(AttentionMapLogger(log_dir, attention_images, test_every))
    else:
        note_tensorboard()
    # Two copies: a process killed while writing one backup resumes from the other.
    backup = os.path.join(run_dir, f"backup_{phase}")
    callbacks.append(keras.callbacks.BackupAndRestore(backup, double_checkpoint=True))
    # shuffle=False: keras_at.data shuffles the train split itself (fit would only warn).
    model.fit(train, epochs=epochs, callbacks=callbacks, verbose=verbose, shuffle=False)
    return _common.read_json(history_path)[phase]


def tensorboard_available() -> bool:
    """Whether TensorBoard's event files can be written: `tf.summary` writes them, on any
    backend (keras.callbacks.TensorBoard, keras_at's AttentionMapLogger)."""
    return importlib.util.find_spec("tensorflow") is not None


TENSORBOARD_SKIPPED = ("TensorBoard logs skipped: TensorFlow is not installed (no event files "
                       "or attention maps under logs/; history.json has every epoch).")
# Set once the line is printed: the processes this one starts (reproduce.py's workers, each
# phase of benchmarks/table1_gpu.py) inherit it and do not repeat the line.
TENSORBOARD_NOTED = "KERAS_AT_TENSORBOARD_SKIPPED_NOTED"


def note_tensorboard() -> None:
    """Prints `TENSORBOARD_SKIPPED` once where TensorFlow is missing, for this process and
    the ones it starts."""
    if os.environ.get(TENSORBOARD_NOTED) or tensorboard_available():
        return
    print(TENSORBOARD_SKIPPED, flush=True)
    os.environ[TENSORBOARD_NOTED] = "1"


def first_images(dataset, count: int = 8):
    """The first `count` images of a dataset: the fixed batch whose attention maps are logged."""
    images, _ = next(iter(dataset))
    return images[:count]


# === Transfer start: the weights are 0 before --transfer-start-epoch (Table 5) ===

TRANSFER_WEIGHTS = ("beta", "alpha", "hint_beta")


def transfer_start(args) -> int:
    """The index (from 0) of the first epoch with the transfer losses on; 0 for scripts without
    `--transfer-start-epoch`, which counts from 1 as `--lr-epochs` and history.json do."""
    return max((getattr(args, "transfer_start_epoch", 0) or 0) - 1, 0)


def before_transfer(args):
    """`args` with every transfer weight 0 when the transfer starts later, else `args`.

    A Distiller built from it pairs the layers (and checks them) at construction, but computes
    no transfer term and never runs the teacher until `transfer_schedules` sets a weight above
    0; the Distiller then traces that term into its step.
    """
    if not transfer_start(args):
        return args
    return argparse.Namespace(**{**vars(args), **dict.fromkeys(TRANSFER_WEIGHTS, 0.0)})


def transfer_schedules(args) -> list:
    """The loss-weight callbacks of the student phase.

    `beta_schedule` at the learning-rate drops, and with `--transfer-start-epoch N > 1`:
    every transfer weight given a flag value above 0 is 0 in epochs before the N-th and that
    value from the N-th on (decayed
    by `beta_schedule`'s decay, which is a function of the epoch). Every value is a function of
    the epoch alone, so a resumed run (whose restored weight may be the 0 held before N) gets
    the same values as an uninterrupted one.
    """
    schedules = beta_schedule(args, drop_epochs(args))
    start = transfer_start(args)
    if not start:
        return schedules
    gated = [w for w in TRANSFER_WEIGHTS if getattr(args, w) > 0]
    decays = {s.weight: s for s in schedules if getattr(s, "weight", None) in gated}
    gates = []
    for weight in gated:
        value, decay = float(getattr(args, weight)), decays.get(weight)
        if isinstance(decay, BetaDecay):
            # Its base pinned to the flag: the value it would read back on resuming is 0.
            decay = BetaDecay.from_config({**decay.get_config(), "initial_value": value})
        gates.append(BetaScheduler(_gate(start, value, decay), weight=weight))
    return gates + [s for s in schedules if getattr(s, "weight", None) not in gated]


def _gate(start: int, value: float, decay: BetaScheduler | None):
    def schedule(epoch, current):
        if epoch < start:
            return 0.0
        return value if decay is None else decay.schedule(epoch, value)

    return schedule


# === The experiment: a teacher (given, or trained first), then the student ===


def run(args, script: str, load_data, make_teacher, make_student, load_teacher=None) -> dict:
    """Runs one experiment into its run directory; returns its history.json contents.

    Args:
        args: parsed flags of `add_training_args`, `add_teacher_args` and
            `add_transfer_args`.
        script: name of the calling script, for the default run directory.
        load_data: `() -> (train, test)` datasets.
        make_teacher, make_student: `() -> keras.Model`, a fresh network to train (with any
            pretrained weights and frozen layers already set).
        load_teacher: `(path) -> keras.Model` reading `--teacher`; None: a .keras file.
    """
    run_dir = _common.prepare_run_dir(args, script)
    history_path = os.path.join(run_dir, "history.json")
    done = _common.read_json(history_path, {})
    if "test_error" in done:
        print(f"{run_dir} has finished already: test error {done['test_error']:.4f}.")
        return done
    start = time.time()
    train, test = load_data()
    steps = len(train)  # batches: a tf.data.Dataset's cardinality, or a PyDataset's length

    teacher = None
    if transfers(args) or args.teacher_only:
        teacher = load_or_train_teacher(args, run_dir, train, test, make_teacher,
                                        load=load_teacher)
    if args.teacher_only:
        return _finish(run_dir, "teacher", teacher, start)
    keras.utils.set_random_seed(args.seed)
    student = make_student()
    if teacher is None:
        print(f"Training the student {student.name} alone.")
        _train_alone(student, "student", train, test, args, run_dir, args.epochs)
    else:
        model = distiller(student, teacher, before_transfer(args))
        print(f"Training the student {student.name} from {teacher.name}: pairs {model.pairs}, "
              f"beta={args.beta:g}, alpha={args.alpha:g}, hint_beta={args.hint_beta:g}.")
        if transfer_start(args):
            print(f"Transfer losses from epoch {transfer_start(args) + 1} (counted from 1) on; "
                  "0 before.")
        model.compile(optimizer=sgd(args, steps), metrics=["accuracy"])
        fit(model, train, test, run_dir, "student", args.epochs, args.verbose,
            schedules=transfer_schedules(args), attention_images=first_images(test),
            test_every=args.test_every)
        save_atomically(student.save, os.path.join(run_dir, "student.keras"))
    return _finish(run_dir, "student", student, start)


def load_or_train_teacher(args, run_dir, train, test, make_teacher, phase: str = "teacher",
                          given: str | None = None, load=None) -> keras.Model:
    """A teacher: the file `given` (for `phase="teacher"`: `--teacher`) read by `load` (default:
    a .keras file), the run's finished `<phase>.keras`, or trained here as the phase `phase` (a
    script with a second teacher)."""
    given = args.teacher if phase == "teacher" else given
    if given:
        return (load or keras.saving.load_model)(given)
    path = os.path.join(run_dir, f"{phase}.keras")
    if os.path.isfile(path):  # a resumed run whose teacher had finished
        return keras.saving.load_model(path)
    keras.utils.set_random_seed(args.seed)
    teacher = make_teacher()
    print(f"Training the {phase.replace('_', ' ')} {teacher.name} "
          f"({teacher.count_params():,} parameters).")
    _train_alone(teacher, phase, train, test, args, run_dir,
                 args.teacher_epochs or args.epochs)
    return teacher


def _train_alone(model, phase, train, test, args, run_dir, epochs) -> None:
    """Trains a network on its task alone (a teacher, or the student without transfer)."""
    model.compile(
        optimizer=sgd(args, len(train), epochs),
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
