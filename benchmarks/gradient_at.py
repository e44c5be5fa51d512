"""Cost of double backprop: gradient-AT, min-l2 and symmetry steps over a plain student step.

The paper (§3.2) says the second backpropagation costs about as much as the first. In one
process, on the same batch (default 128 × 32×32×3), NIN-thin without BN as the student of
Table 3 (or WRN-16-1) and NIN-wide as the teacher, this times Keras's own compiled
`train_function` of a Distiller for each variant:

- `plain`: all transfer weights 0 and `pairs=[]`, i.e. the student's own step (no teacher,
  no inner tape);
- `min_l2`: `input_grad_penalty > 0`, one double backprop, no teacher;
- `grad_at`: `grad_beta > 0`, the student's double backprop plus the teacher's forward and
  input gradient;
- `grad_at_cached`: the same step given the teacher's input gradient, precomputed with
  `Distiller.teacher_input_gradients` (no teacher in the step): exact when the teacher is
  frozen and flips are the only augmentation
  (`keras_at.data.teacher_gradients.cached_gradient_dataset`);
- `symmetry`: `symmetry_beta > 0`, two double backprops (x and flip(x)).

Variants run in interleaved rounds, in a rotating order; each round times `--steps` calls
after a warmup, and the best round counts, since this machine's timings wander.

Usage:
    python benchmarks/gradient_at.py                      # NIN-thin student, 5 rounds
    python benchmarks/gradient_at.py --student wrn --rounds 7 --steps 10
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns oneDNN on by itself only on CPUs with AVX-512 or AMX; on others (the
# AVX2 AMD EPYC here) a WRN training step is 1.8x slower without it (README).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_at  # noqa: E402
from keras_at.models import nin, wide_resnet  # noqa: E402

VARIANTS = {
    "plain": {},
    "min_l2": {"input_grad_penalty": 1.0},
    "grad_at": {"grad_beta": 1.0},
    "grad_at_cached": {"grad_beta": 1.0},
    "symmetry": {"symmetry_beta": 1.0},
}
CACHED = ("grad_at_cached",)  # fed ((images, teacher input gradients), labels)
GOAL = 3.0  # grad-AT step / plain step on CPU (issue 3)


def networks(kind, shape):
    """(student, teacher): NIN-thin without BN <- NIN-wide (Table 3), or WRN-16-1 <- WRN-16-2."""
    keras.utils.set_random_seed(0)
    if kind == "nin":
        return nin("thin", input_shape=shape, batch_norm=False), nin("wide", input_shape=shape)
    return wide_resnet(16, 1, input_shape=shape), wide_resnet(16, 2, input_shape=shape)


def build(variant, args, shape):
    """A compiled Distiller for `variant`, with its own student and teacher."""
    student, teacher = networks(args.student, shape)
    distiller = keras_at.Distiller(student, teacher, pairs=[], beta=0.0, **VARIANTS[variant])
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return distiller


def time_steps(distiller, batch, steps):
    """Seconds per call of Keras's compiled train function on one fixed batch."""
    logs = None
    start = time.perf_counter()
    for _ in range(steps):
        logs = distiller.train_function([batch])
    float(logs["loss"])  # waits for the last step
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student", choices=("nin", "wrn"), default="nin",
                        help="NIN-thin without BN (Table 3) or WRN-16-1")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--size", type=int, default=32, help="image height and width")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    shape = (args.size, args.size, 3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size, *shape)).astype("float32")
    y = rng.integers(0, 10, args.batch_size)

    distillers, batches = {}, {}
    for variant in VARIANTS:
        distillers[variant] = build(variant, args, shape)
        inputs = x
        if variant in CACHED:
            inputs = (x, distillers[variant].teacher_input_gradients(x, y, args.batch_size))
        batches[variant] = (tf.nest.map_structure(tf.constant, inputs), tf.constant(y))
        # One real fit step builds the optimizer and `train_function`.
        distillers[variant].fit(inputs, y, batch_size=args.batch_size, epochs=1, verbose=0)
        time_steps(distillers[variant], batches[variant], args.warmup)

    best = dict.fromkeys(VARIANTS, float("inf"))
    names = list(VARIANTS)
    for r in range(args.rounds):
        for variant in names[r % len(names):] + names[: r % len(names)]:
            step = time_steps(distillers[variant], batches[variant], args.steps)
            best[variant] = min(best[variant], step)

    student, teacher = distillers["plain"].student, distillers["plain"].teacher
    print(f"student {student.name} ({student.count_params() / 1e6:.2f}M), teacher "
          f"{teacher.name} ({teacher.count_params() / 1e6:.2f}M), batch {args.batch_size}x"
          f"{args.size}x{args.size}x3, best of {args.rounds} rounds x {args.steps} steps, "
          f"{os.cpu_count()} CPUs")
    print("| step | ms/step | × plain |")
    print("|---|---:|---:|")
    for variant in VARIANTS:
        ratio = best[variant] / best["plain"]
        print(f"| {variant} | {1e3 * best[variant]:.1f} | {ratio:.2f} |")
    for variant, how in (("grad_at", "the teacher's J computed in every step"),
                         ("grad_at_cached", "the teacher's J precomputed, read from the batch")):
        ratio = best[variant] / best["plain"]
        verdict = "within" if ratio <= GOAL else "over"
        print(f"{variant} / plain = {ratio:.2f} ({verdict} the goal of {GOAL:.1f}x; {how})")
    # grad_at = min_l2's student work + the teacher's forward and input gradient.
    teacher_j = (best["grad_at"] - best["min_l2"]) / best["plain"]
    print(f"student's double backprop (min_l2) / plain = {best['min_l2'] / best['plain']:.2f}; "
          f"teacher's J (grad_at - min_l2) / plain = {teacher_j:.2f}")
    print(f"the cache's price: J_T of every batch of the data and of its flip, about "
          f"{2 * teacher_j:.1f}x a plain step per batch, paid once before training, not per epoch")


if __name__ == "__main__":
    main()
