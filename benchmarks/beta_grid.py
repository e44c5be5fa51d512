"""Which β for which optimizer: AT's weight under SGD and Adam, against the student alone.

β = 1e3 is the weight the paper uses with SGD (momentum 0.9). With Adam, whose per-parameter
step size ignores the gradient's scale, the same β weighs the attention term differently. This
trains one WRN-10-2 teacher (SGD), then for each optimizer, each β of `--betas` (0: the student
alone, no Distiller) and each seed a WRN-10-1 student on the same initialisation and data
order, and writes the final test error of every run as a markdown table (`--out`).

Both optimizers get the same schedule (lr x0.2 at 1/2 and 3/4 of the epochs) and the models'
coupled L2 weight decay (5e-4); SGD starts at lr 0.1 with momentum 0.9 (the authors' code's),
Adam at Keras's default 1e-3.

Usage:
    python benchmarks/beta_grid.py --out docs/beta_grid.md            # Fashion-MNIST subset
    python benchmarks/beta_grid.py --dataset digits --limit 128 --epochs 1 --seeds 1
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns oneDNN on by itself only on CPUs with AVX-512 or AMX; on others (the
# AVX2 AMD EPYC here) a WRN training step is 1.8x slower without it (README).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_at  # noqa: E402

OPTIMIZERS = {"sgd": 0.1, "adam": 1e-3}  # initial learning rates


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--limit", type=int, default=500, help="training images (the first N)")
    p.add_argument("--test-limit", type=int, default=2000, help="test images (the first N)")
    p.add_argument("--epochs", type=int, default=10, help="student epochs")
    p.add_argument("--teacher-epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1")
    p.add_argument("--optimizers", type=lambda t: t.split(","), default=list(OPTIMIZERS))
    p.add_argument("--betas", type=lambda t: [float(b) for b in t.split(",")],
                   default=[0.0, 1e1, 1e2, 1e3], help="0 is the student alone")
    p.add_argument("--out", default=None, help="markdown file for the table (else printed)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return p


def optimizer(name: str, epochs: int, steps: int) -> keras.optimizers.Optimizer:
    lr = OPTIMIZERS[name]
    bounds = [epochs // 2 * steps, epochs * 3 // 4 * steps]
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        bounds, [lr, lr * 0.2, lr * 0.04]
    )
    if name == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9)
    return keras.optimizers.Adam(schedule)


def test_error(model, test) -> float:
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return 100 * (1 - model.evaluate(test, verbose=0)[1])


def train(model, opt, train_data, epochs, beta=None, teacher=None) -> None:
    """Fits `model` alone (`beta` None) or as the student of a Distiller with AT weight `beta`."""
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if beta is not None:
        model = keras_at.Distiller(model, teacher, beta=beta)
    model.compile(opt, ce)
    model.fit(train_data, epochs=epochs, verbose=0)


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.out and os.path.exists(args.out) and not args.overwrite:
        raise SystemExit(f"{args.out} exists; pass --overwrite to replace it.")
    start = time.time()
    shape = keras_at.data.info(args.dataset).image_shape
    test = keras_at.data.load(args.dataset, split="test", batch_size=500, limit=args.test_limit)

    def data(seed):
        return keras_at.data.load(args.dataset, batch_size=args.batch_size, limit=args.limit,
                                  seed=seed)

    steps = len(data(0))
    keras.utils.set_random_seed(0)
    teacher = keras_at.models.wide_resnet(10, 2, input_shape=shape, weight_decay=5e-4)
    train(teacher, optimizer("sgd", args.teacher_epochs, steps), data(0), args.teacher_epochs)
    teacher_error = test_error(teacher, test)
    print(f"teacher WRN-10-2: {teacher_error:.2f}%", flush=True)

    errors = {}  # (optimizer, beta) -> [error per seed]
    for name in args.optimizers:
        for beta in args.betas:
            for seed in range(args.seeds):
                keras.utils.set_random_seed(seed)
                student = keras_at.models.wide_resnet(10, 1, input_shape=shape,
                                                      weight_decay=5e-4)
                train(student, optimizer(name, args.epochs, steps), data(seed), args.epochs,
                      beta=beta or None, teacher=teacher)
                errors.setdefault((name, beta), []).append(test_error(student, test))
                print(f"{name} beta={beta:g} seed={seed}: {errors[name, beta][-1]:.2f}%",
                      flush=True)

    table = report(args, errors, teacher_error, (time.time() - start) / 60)
    print(table)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        temporary = f"{args.out}.tmp"
        with open(temporary, "w") as file:
            file.write(table)
        os.replace(temporary, args.out)


def report(args, errors: dict, teacher_error: float, minutes: float) -> str:
    seeds = range(args.seeds)
    lines = [
        f"`python benchmarks/{os.path.basename(__file__)} "
        f"{' '.join(sys.argv[1:])}`".replace(" `", "`"),
        "",
        f"WRN-10-1 student <- WRN-10-2 teacher (SGD, {args.teacher_epochs} epochs: "
        f"{teacher_error:.2f}% test error); {args.dataset}, the first {args.limit} training "
        f"images, the first {args.test_limit} test images; {args.epochs} epochs, batch "
        f"{args.batch_size}, lr x0.2 at 1/2 and 3/4, coupled weight decay 5e-4; SGD lr 0.1 "
        f"momentum 0.9, Adam lr 1e-3; {args.seeds} seeds (the same initialisation and data "
        f"order for every row); {minutes:.1f} minutes on {os.cpu_count()} CPU cores "
        f"({platform.machine()}), keras {keras.__version__}. Final test error, %.",
        "",
        "| optimizer | β | " + " | ".join(f"seed {s}" for s in seeds)
        + " | mean | − alone, per seed |",
        "|---|---|" + "---:|" * (args.seeds + 2),
    ]
    for (name, beta), values in errors.items():
        alone = errors.get((name, 0.0))
        delta = ("" if beta == 0 or alone is None else
                 ", ".join(f"{v - a:+.2f}" for v, a in zip(values, alone)))
        label = "alone" if beta == 0 else f"{beta:g}"
        lines.append(f"| {name} | {label} | " + " | ".join(f"{v:.2f}" for v in values)
                     + f" | {np.mean(values):.2f} | {delta} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
