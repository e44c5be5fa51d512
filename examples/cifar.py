"""Tables 1 and 2: a Wide ResNet student learns from a WRN teacher by AT, KD, AT+KD or F-ActT.

The defaults are the paper's CIFAR recipe: 200 epochs of SGD (momentum 0.9, batch 128),
learning rate 0.1 multiplied by 0.2 at epochs 60, 120 and 160, coupled weight decay 5e-4,
4-pixel pad + random crop + horizontal flip, beta = 1e3 on every group's F_sum^2 attention map.
Without --teacher, the teacher (WRN-16-2 by default) is trained first, with the same recipe,
into the same run directory.

    # AT, WRN-16-1 <- WRN-16-2 (trains the teacher first): Table 1 gives 7.93% error
    python examples/cifar.py --out runs/at
    # the same teacher, the student alone (8.77%), KD (7.41%), AT+KD (7.51%, beta decayed)
    python examples/cifar.py --teacher runs/at/teacher.keras --beta 0 --out runs/student
    python examples/cifar.py --teacher runs/at/teacher.keras --beta 0 --alpha 0.9 --out runs/kd
    python examples/cifar.py --teacher runs/at/teacher.keras --alpha 0.9 --out runs/at-kd
    # Table 2 (attention mapping function) and the single-group ablation
    python examples/cifar.py --teacher runs/at/teacher.keras --attention max --p 1 --out runs/max
    python examples/cifar.py --teacher runs/at/teacher.keras --pairs group1 --out runs/group1

The run directory gets student.keras, teacher.keras (when trained here), history.json (every
epoch: losses, learning rate, beta, test error) and TensorBoard logs with the attention maps
(`tensorboard --logdir runs/at/logs`). An interrupted run continues with --resume.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import keras  # noqa: E402

from keras_at import data, models  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", default="cifar10",
                   choices=("cifar10", "cifar100", "fashion_mnist", "mnist", "digits"))
    p.add_argument("--data-dir", default=None, help="where to look for the dataset's files first")
    p.add_argument("--depth", type=int, default=16, help="student WRN depth")
    p.add_argument("--width", type=int, default=1, help="student WRN widening factor")
    p.add_argument("--teacher", default=None,
                   help="a trained teacher .keras file; without it, a WRN teacher is trained first")
    p.add_argument("--teacher-depth", type=int, default=16)
    p.add_argument("--teacher-width", type=int, default=2)
    p.add_argument("--teacher-epochs", type=int, default=None,
                   help="epochs of the teacher trained here (default: --epochs)")
    p.add_argument("--teacher-only", action="store_true",
                   help="train the teacher into --out and stop (then pass it as --teacher)")
    _common.add_training_args(p)
    _common.add_transfer_args(p)
    return p


def wrn(depth: int, width: int, meta, args) -> keras.Model:
    return models.wide_resnet(depth, width, meta.num_classes, meta.image_shape,
                              weight_decay=args.weight_decay)


def load_data(args):
    """(train, test, metadata): the training subset augmented, the test subset fixed."""
    train = data.load(args.dataset, "train", batch_size=args.batch_size, data_dir=args.data_dir,
                      seed=args.seed, limit=args.limit)
    test = data.load(args.dataset, "test", batch_size=256, data_dir=args.data_dir,
                     limit=args.test_limit)
    return train, test, data.info(args.dataset)


def train_plain(model, name, train, test, args, run_dir, epochs) -> list[dict]:
    """Trains a network on its own (a teacher, or the student without transfer)."""
    _common.compile_classifier(model, _common.sgd(args, int(train.cardinality())))
    history = _common.fit(model, train, test, run_dir, name, epochs, args.verbose)
    model.save(os.path.join(run_dir, f"{name}.keras"))
    return history


def teacher_model(args, meta, train, test, run_dir) -> keras.Model:
    if args.teacher:
        return keras.saving.load_model(args.teacher)
    path = os.path.join(run_dir, "teacher.keras")
    if os.path.isfile(path):  # a resumed run whose teacher had finished
        return keras.saving.load_model(path)
    keras.utils.set_random_seed(args.seed)
    teacher = wrn(args.teacher_depth, args.teacher_width, meta, args)
    print(f"Training the teacher {teacher.name} ({teacher.count_params():,} parameters).")
    train_plain(teacher, "teacher", train, test, args, run_dir, args.teacher_epochs or args.epochs)
    return teacher


def main(argv=None) -> dict:
    """Runs one experiment; returns its history.json contents."""
    cli = parser()
    args = cli.parse_args(argv)
    if args.teacher_only and args.teacher:
        cli.error("--teacher-only trains a teacher; it cannot be given one with --teacher.")
    run_dir = _common.prepare_run_dir(args, "cifar")
    history_path = os.path.join(run_dir, "history.json")
    done = _common.read_json(history_path, {})
    if "test_error" in done:
        print(f"{run_dir} has finished already: test error {done['test_error']:.4f}.")
        return done
    start = time.time()
    train, test, meta = load_data(args)

    teacher = None
    if _common.transfers(args) or args.teacher_only:
        teacher = teacher_model(args, meta, train, test, run_dir)
    if args.teacher_only:
        return finish(run_dir, "teacher", teacher, test, start)
    keras.utils.set_random_seed(args.seed)
    student = wrn(args.depth, args.width, meta, args)
    if teacher is None:
        print(f"Training the student {student.name} alone.")
        train_plain(student, "student", train, test, args, run_dir, args.epochs)
    else:
        model = _common.distiller(student, teacher, args)
        print(f"Training the student {student.name} from {teacher.name}: pairs {model.pairs}, "
              f"beta={args.beta:g}, alpha={args.alpha:g}, hint_beta={args.hint_beta:g}.")
        model.compile(optimizer=_common.sgd(args, int(train.cardinality())),
                      metrics=["accuracy"])
        _common.fit(model, train, test, run_dir, "student", args.epochs, args.verbose,
                    schedules=_common.beta_schedule(args),
                    attention_images=_common.first_images(test))
        student.save(os.path.join(run_dir, "student.keras"))
    return finish(run_dir, "student", student, test, start)


def finish(run_dir, phase, model, test, start) -> dict:
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


if __name__ == "__main__":
    main()
