"""Input-pipeline throughput against the WRN-16-1 training steps that consume it.

Rates in images/s, measured in one process:

1. pipeline alone: keras_at.data's augmented training pipeline (shuffle, per-example
   reflect-pad 4 + random crop + flip, batch, normalise; tf.data prefetches, the numpy
   pipeline makes batches one after another in one thread).
2. fit, in memory: `fit` on one ready-made batch repeated, so input costs nothing.
3. bound: the rate of 2 if each batch of 1 were made between two steps, never beside one,
   i.e. `1 / (1 / in-memory + 1 / pipeline alone)` of the same round: what a pipeline in the
   training thread would at worst let through (the numpy pipeline with one worker).
4. fit, fed: the same `fit` fed by the pipeline (the numpy pipeline once per `--workers`
   setting: PyDataset's threads, or processes).

`--model` picks the step: `student`, a plain WRN-16-1 step, or `at`, the WRN-16-1 <- WRN-16-2
AT step of a `keras_at.Distiller`. fed / in-memory is the fraction of the training step's speed
that the input pipeline lets through (target: >= 0.95), from the best round of each and, as
`paired`, the median over rounds of the ratio within a round (whose fits ran within seconds of
each other); pipeline / in-memory is the headroom.
The default source is synthetic uint8 CIFAR-shaped arrays through `keras_at.data.from_arrays`
with the CIFAR augmentation, i.e. exactly the pipeline `load("cifar10")` builds, with no files
needed; `--source fashion_mnist` (or any name `load` knows) times the real loader instead.

`--backend jax` runs Keras on JAX with TensorFlow kept out of the process (as where it is not
installed), so `load` gives the numpy pipeline, an `ArrayDataset` (a `keras.utils.PyDataset`);
`--pipeline` picks one explicitly where TensorFlow is installed. The fits alternate for
`--rounds` rounds, which goes first rotating, and the best round of each counts, because
timings on a shared machine wander; the load average before and after is printed with the
table. Input-pipeline threads
share the CPU with the training step, so on a small CPU the fed fit can lose a little even
when the pipeline alone is many times faster.

Usage:
    python benchmarks/data_pipeline.py
    python benchmarks/data_pipeline.py --source fashion_mnist --image-size 32 --steps 40
    python benchmarks/data_pipeline.py --backend jax --model student at --workers 1 2 2p \
        --out docs/data_pipeline_jax.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("tensorflow", "jax"),
                        default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    parser.add_argument("--pipeline", choices=("auto", "tf", "numpy"), default="auto",
                        help="load()'s pipeline; auto: tf.data with TensorFlow, else numpy")
    parser.add_argument("--model", nargs="+", choices=("student", "at"), default=["student"],
                        help="the training steps fed")
    parser.add_argument("--workers", nargs="+", default=["1"], metavar="N[p]",
                        help="numpy pipeline: PyDataset workers, threads (N) or processes (Np), "
                        "one fed fit each")
    parser.add_argument("--source", default="synthetic", help="'synthetic' or a load() name")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--examples", type=int, default=10000, help="examples in the pipeline")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per fit")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    for workers in args.workers:
        if not workers.removesuffix("p").isdigit() or int(workers.removesuffix("p")) < 1:
            parser.error(f"--workers takes N or Np with N >= 1; got {workers!r}.")
    return args


if __name__ == "__main__":
    # Keras's backend is fixed when Keras is imported: read the command line first.
    ARGS = parse_args()
    os.environ["KERAS_BACKEND"] = ARGS.backend
    if ARGS.backend == "jax" and ARGS.pipeline != "tf":
        # The process runs as where TensorFlow is not installed (a JAX GPU machine).
        sys.modules.setdefault("tensorflow", None)
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns oneDNN on by itself only on CPUs with AVX-512 or AMX; on others (the
# AVX2 AMD EPYC here) a WRN training step is 1.8x slower without it (README).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_at  # noqa: E402
from keras_at import data  # noqa: E402


def pipeline(args):
    """The augmented training data: a `tf.data.Dataset` or an `ArrayDataset`."""
    if args.source == "synthetic":
        rng = np.random.default_rng(0)
        size = args.image_size or 32
        images = rng.integers(0, 256, (args.examples, size, size, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, args.examples)
        info = data.info("cifar10")
        return data.from_arrays(
            images, labels, args.batch_size, info.augmentation, True, 0, info.mean, info.std,
            pipeline=args.pipeline,
        )
    return data.load(
        args.source,
        batch_size=args.batch_size,
        seed=0,
        limit=args.examples,
        image_size=args.image_size,
        pipeline=args.pipeline,
    )


class Repeated(keras.utils.PyDataset):
    """One ready-made batch, `count` times: the in-memory input of a PyDataset-fed fit."""

    def __init__(self, batch, count):
        super().__init__()
        self.batch, self.count = batch, count

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        return self.batch


def model(name, input_shape, num_classes):
    """The compiled step: a WRN-16-1 student alone, or learning from a WRN-16-2 with AT."""
    from keras_at.models import wide_resnet

    keras.utils.set_random_seed(0)
    student = wide_resnet(16, 1, num_classes=num_classes, input_shape=input_shape)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if name == "student":
        student.compile(optimizer=optimizer, loss=loss)
        return student
    teacher = wide_resnet(16, 2, num_classes=num_classes, input_shape=input_shape)
    distiller = keras_at.Distiller(student, teacher, beta=1e3)
    distiller.compile(optimizer=optimizer, loss=loss)
    return distiller


def fit_rate(trained, dataset, args) -> float:
    """Images/s of the steps after the first `warmup` of one `fit` epoch."""
    times = []

    def on_batch_end(batch, logs):
        if batch + 1 in (args.warmup, args.warmup + args.steps):
            float(logs["loss"])  # waits for the step (JAX dispatches asynchronously)
            times.append(time.perf_counter())

    clock = keras.callbacks.LambdaCallback(on_train_batch_end=on_batch_end)
    trained.fit(dataset, epochs=1, steps_per_epoch=args.warmup + args.steps, callbacks=[clock],
                verbose=0, shuffle=False)
    return args.steps * args.batch_size / (times[1] - times[0])


def pipeline_rate(dataset, args) -> float:
    """Images/s of the pipeline alone (a tf.data iterator, or `ArrayDataset[i]` in turn)."""
    count = args.steps * 4
    if isinstance(dataset, keras.utils.PyDataset):
        batches = (dataset[i % len(dataset)] for i in range(args.warmup + count))
    else:
        batches = iter(dataset.repeat())
    for _ in range(args.warmup):
        next(batches)
    start = time.perf_counter()
    for _ in range(count):
        next(batches)
    return count * args.batch_size / (time.perf_counter() - start)


def inputs(args):
    """`(name, dataset)` of each fed fit, the in-memory input, and the first batch."""
    fed = pipeline(args)
    if not isinstance(fed, keras.utils.PyDataset):
        import tensorflow as tf

        images, labels = next(iter(fed))
        memory = tf.data.Dataset.from_tensors((images, labels)).repeat()
        return [("tf.data", fed.repeat())], memory, fed, (images, labels)
    needed = args.warmup + args.steps
    if len(fed) < needed:
        raise ValueError(f"--examples {args.examples} make {len(fed)} batches; a fit takes "
                         f"{needed} (--warmup + --steps): give more examples.")
    batch = fed[0]
    feeds = []
    for workers in args.workers:
        processes = workers.endswith("p")
        count = int(workers.removesuffix("p"))
        dataset = pipeline(args)
        dataset.workers, dataset.use_multiprocessing = count, processes
        kind = ('process' if processes else 'thread') + ('es' if processes else 's') * (count > 1)
        name = f"numpy, {count} {kind}"
        feeds.append((name, dataset))
    return feeds, Repeated(batch, needed), fed, batch


def environment(args, batch, loads) -> str:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        where = f"JAX {jax.__version__} on {jax.devices()[0].platform}"
    else:
        import tensorflow as tf

        devices = sorted({d.device_type for d in tf.config.list_logical_devices()})
        where = f"TensorFlow {tf.__version__} on {devices}"
    tensorflow = "not imported" if sys.modules.get("tensorflow") is None else "imported"
    return (
        f"source {args.source}, batch {tuple(np.shape(batch[0]))}, {args.examples} examples, "
        f"best of {args.rounds} rounds x {args.steps} steps; keras {keras.__version__}, {where} "
        f"(TensorFlow {tensorflow}), {os.cpu_count()} CPUs; load average "
        f"{loads[0][0]:.1f} before, {loads[1][0]:.1f} after (1-minute)."
    )


def main(args):
    loads = [os.getloadavg()]
    feeds, memory, first, batch = inputs(args)
    num_classes = 100 if args.source == "cifar100" else 10
    shape = tuple(np.shape(batch[0])[1:])
    alone_rates, rows = [], []
    for name in args.model:
        trained = model(name, shape, num_classes)
        sources = [("in-memory", memory), *feeds]
        fed_rates = {source: [] for source, _ in sources}
        for r in range(args.rounds):
            alone_rates.append(pipeline_rate(first, args))
            # Which input goes first rotates: none always follows the pipeline's timing.
            turn = r % len(sources)
            for source, dataset in sources[turn:] + sources[:turn]:
                fed_rates[source].append(fit_rate(trained, dataset, args))
        memory_rates = fed_rates.pop("in-memory")
        step = "WRN-16-1" if name == "student" else "WRN-16-1 <- WRN-16-2 AT"
        best = max(memory_rates)
        rows.append((f"{step} fit, in-memory batch", best, memory_rates, None, None))
        # Batches made in the training thread, never overlapping a step: a lower bound.
        serial = [1 / (1 / m + 1 / a) for m, a in zip(memory_rates, alone_rates[-args.rounds:],
                                                        strict=True)]
        rows.append((f"{step}, bound for batches made between steps", max(serial), serial,
                     max(serial) / best, float(np.median(np.divide(serial, memory_rates)))))
        for feed, rates in fed_rates.items():
            paired = float(np.median(np.divide(rates, memory_rates)))
            rows.append((f"{step} fit, fed by {feed}", max(rates), rates, max(rates) / best,
                         paired))
    rows.insert(0, ("pipeline alone (augmented, one thread)" if feeds[0][0] != "tf.data" else
                    "pipeline alone (augmented)", max(alone_rates), alone_rates, None, None))
    loads.append(os.getloadavg())

    lines = ["| input | images/s, best | each round | fed / in-memory, best | paired |",
             "|---|---:|---|---:|---:|"]
    for name, rate, rates, ratio, paired in rows:
        shown = ["" if r is None else f"{r:.3f}" for r in (ratio, paired)]
        lines.append(f"| {name} | {rate:.0f} | {', '.join(f'{r:.0f}' for r in rates)} | "
                     f"{shown[0]} | {shown[1]} |")
    argv = sys.argv[1:]
    if "--out" in argv:  # where the table went is not how it was measured
        del argv[argv.index("--out") : argv.index("--out") + 2]
    command = " ".join(["python benchmarks/data_pipeline.py", *argv])
    table = (f"`{command}`\n\n" + "\n".join(lines) + "\n\n"
             + environment(args, batch, loads) + "\n")
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table)


if __name__ == "__main__":
    main(ARGS)
