"""Input-pipeline throughput against the WRN-16-1 training step that consumes it.

Three rates in images/s, measured in one process:

1. pipeline: keras_at.data's augmented training pipeline alone (shuffle, per-example
   reflect-pad 4 + random crop + flip, batch, normalise, prefetch).
2. fit, in memory: `student.fit` on one ready-made batch repeated, so input costs nothing.
3. fit, fed: the same `fit` fed by the pipeline.

fed / in-memory is the fraction of the training step's speed that the input pipeline lets through
(the issue's target: >= 0.95); pipeline / in-memory is the headroom. The default source is
synthetic uint8 CIFAR-shaped arrays through `keras_at.data.from_arrays` with the CIFAR
augmentation, i.e. exactly the pipeline `load("cifar10")` builds, with no files needed;
`--source fashion_mnist` (or any name `load` knows) times the real loader instead. The two fits
alternate for `--rounds` rounds and the best round of each counts, because timings on a shared
machine wander. Input-pipeline threads share the CPU with the training step, so on a small CPU
the fed fit can lose a little even when the pipeline alone is many times faster.

Usage:
    python benchmarks/data_pipeline.py
    python benchmarks/data_pipeline.py --source fashion_mnist --image-size 32 --steps 40
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

from keras_at import data  # noqa: E402


def pipeline(args) -> tf.data.Dataset:
    if args.source == "synthetic":
        rng = np.random.default_rng(0)
        size = args.image_size or 32
        images = rng.integers(0, 256, (args.examples, size, size, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, args.examples)
        info = data.info("cifar10")
        return data.from_arrays(
            images, labels, args.batch_size, info.augmentation, True, 0, info.mean, info.std
        )
    return data.load(
        args.source,
        batch_size=args.batch_size,
        seed=0,
        limit=args.examples,
        image_size=args.image_size,
    )


def model(input_shape, num_classes):
    """WRN-16-1 when keras_at.models has it; a small CNN otherwise (and says so)."""
    try:
        from keras_at.models import wide_resnet
    except ImportError as e:
        print(f"keras_at.models.wide_resnet unavailable ({e}); timing a small CNN instead.")
        inputs = keras.Input(input_shape)
        x = inputs
        for filters in (16, 32, 64):
            x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
        outputs = keras.layers.Dense(num_classes)(keras.layers.GlobalAveragePooling2D()(x))
        return keras.Model(inputs, outputs, name="small_cnn")
    return wide_resnet(16, 1, num_classes=num_classes, input_shape=input_shape)


class _Clock(keras.callbacks.Callback):
    """Wall time of the batches after the first `warmup` of a fit."""

    def __init__(self, warmup):
        super().__init__()
        self.warmup, self.batches, self.start = warmup, 0, None

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.batches == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.start


def fit_rate(student, dataset, args) -> float:
    clock = _Clock(args.warmup)
    steps = args.steps + args.warmup
    student.fit(
        dataset, epochs=1, steps_per_epoch=steps, callbacks=[clock], verbose=0, shuffle=False
    )
    return args.steps * args.batch_size / clock.seconds


def pipeline_rate(dataset, args) -> float:
    batches = iter(dataset)
    for _ in range(args.warmup):
        next(batches)
    start = time.perf_counter()
    for _ in range(args.steps * 4):
        next(batches)
    return args.steps * 4 * args.batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="synthetic", help="'synthetic' or a load() name")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--examples", type=int, default=10000, help="examples in the pipeline")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per fit")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    fed = pipeline(args).repeat()
    images, labels = next(iter(fed))
    in_memory = tf.data.Dataset.from_tensors((images, labels)).repeat()
    num_classes = 100 if args.source == "cifar100" else 10
    student = model(tuple(images.shape[1:]), num_classes)
    student.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )

    alone = pipeline_rate(fed, args)
    memory_rates, fed_rates = [], []
    for _ in range(args.rounds):
        memory_rates.append(fit_rate(student, in_memory, args))
        fed_rates.append(fit_rate(student, fed, args))
    memory, fed_best = max(memory_rates), max(fed_rates)

    devices = sorted({d.device_type for d in tf.config.list_logical_devices()})
    print(
        f"source {args.source}, batch {tuple(images.shape)}, model {student.name}, "
        f"{os.cpu_count()} CPUs, devices {devices}"
    )
    print(f"pipeline alone (augmented):  {alone:10.0f} images/s")
    rounds = lambda rates: ", ".join(f"{r:.0f}" for r in rates)  # noqa: E731
    print(f"fit, in-memory batch:        {memory:10.0f} images/s  (rounds: {rounds(memory_rates)})")
    print(f"fit, fed by the pipeline:    {fed_best:10.0f} images/s  (rounds: {rounds(fed_rates)})")
    print(f"fed / in-memory:             {fed_best / memory:10.3f}  (target >= 0.95)")
    print(f"pipeline / training step:    {alone / memory:10.1f}x headroom")


if __name__ == "__main__":
    main()
