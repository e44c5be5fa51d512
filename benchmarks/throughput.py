"""Training-step throughput of the Distiller against its parts and against core Keras.

In one process, on the same batch (default 128 × 32×32×3, WRN-16-1 student
← WRN-16-2 teacher), interleaved: the plain student step, the teacher's
forward pass, the AT, AT+KD, KD, F-ActT and gradient-AT Distiller steps (the teacher's
input gradient computed in the step, or cached once: `grad_at_cached`; `teacher_gradient` is
the teacher's J_T of one batch, the part the cache saves), and core
Keras's `keras.distillation.Distiller` with `LogitsDistillation` (the KD step
a Keras user would otherwise pick). Every Keras variant is timed through Keras's
own `train_on_batch` / `predict_on_batch` (`teacher_gradient` through
`Distiller.teacher_input_gradients`), so each carries the same per-call
overhead. Variants interleave step by step (each round runs `--steps` calls of
each, one by default), the order rotating from round to round, and the best
round counts (the median is shown beside it), because this machine's speed
wanders by several percent over minutes: interleaving gives every variant the
same share of fast and slow spells.

Usage:
    python benchmarks/throughput.py                  # prints a markdown table
    python benchmarks/throughput.py --rounds 40 --memory --out docs/throughput.md
    python benchmarks/throughput.py --memory         # also peak RSS per variant
    python benchmarks/throughput.py --profile runs/profile --only at   # where the time goes
    python benchmarks/throughput.py --backend jax    # the same variants on JAX (no TensorFlow)
    python benchmarks/throughput.py --backend both   # TensorFlow and JAX side by side

`--backend` picks Keras's backend (TensorFlow by default, the project's primary one). A process
has one, fixed when Keras is imported, so `--backend both` runs each backend in a worker process
of its own (`throughput_workers.py`): the workers build and warm up their variants, then
alternate whole rounds (which goes first alternating), and the table (`throughput_report.py`)
puts each variant's time on both side by side with JAX's over TensorFlow's. On JAX, Keras
compiles every step with XLA (its `jit_compile="auto"`); on TensorFlow, on a CPU it leaves XLA
off, as the examples run. The PyTorch reference runs only beside TensorFlow in `both`.
`--time-limit S` stops starting rounds after S seconds of timing (benchmarks/gpu.sh bounds its
run with it); the table says how many rounds ran.

With PyTorch installed (`pip install torch`), the same rounds also time the authors'
PyTorch step rebuilt in `torch_reference.py` (plain WRN-16-1 step, WRN-16-2 forward, AT step),
so the speed-up over the paper's code is measured in the same run; `--no-torch` leaves it out.

Ratios are given twice: from the best round of each variant, and as the median over rounds of
the ratio within a round (`paired`), whose variants ran within seconds of each other.

`--profile DIR` (TensorFlow only) records a TensorFlow profiler trace of each variant's timed
steps into DIR/<variant> (open it with TensorBoard's profile plugin) and prints the time per
step of the most expensive op types with the profiler's events per step. That is how the models'
BatchNorm came to use TensorFlow's fused kernel: Keras's unfused batch norm was a quarter of
a WRN-16-1 step on this CPU.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput_workers  # noqa: E402
import torch_reference  # noqa: E402

VARIANTS = ("student", "teacher_forward", "at", "at_kd", "kd", "hint", "grad_at",
            "grad_at_cached", "teacher_gradient", "core_kd")
BACKENDS = ("tensorflow", "jax")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env = os.environ.get("KERAS_BACKEND")
    parser.add_argument("--backend", choices=BACKENDS + ("both",),
                        default=env if env in BACKENDS else "tensorflow",
                        help="Keras backend: tensorflow, jax, or both side by side (default: "
                             "$KERAS_BACKEND, else tensorflow)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=1, help="calls of a variant per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--time-limit", type=float, metavar="S",
                        help="start no round after S seconds of timing (at least one runs)")
    parser.add_argument("--memory", action="store_true", help="peak RSS per variant (slower)")
    parser.add_argument("--profile", metavar="DIR",
                        help="trace each variant into DIR/<variant> and print its top op types")
    parser.add_argument("--only", choices=VARIANTS + torch_reference.VARIANTS,
                        help="run this variant only")
    parser.add_argument("--no-torch", action="store_true",
                        help="leave out the PyTorch reference even if torch is installed")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    if args.profile and args.backend != "tensorflow":
        parser.error("--profile uses TensorFlow's profiler and op statistics: run it with "
                     "--backend tensorflow (on JAX, jax.profiler.trace records a trace).")
    return args


if __name__ == "__main__":
    # Keras's backend is fixed when Keras is imported: read the command line first.
    ARGS = parse_args()
    if ARGS.backend == "both":
        throughput_workers.main(ARGS)  # its workers import Keras; this process needs none
        sys.exit(0)
    os.environ["KERAS_BACKEND"] = ARGS.backend
    if ARGS.backend == "jax":
        # Where TensorFlow is installed, Keras imports it to seed it too (set_random_seed): the
        # JAX process runs as on a machine without it (the GPU one), its RSS JAX's alone.
        sys.modules.setdefault("tensorflow", None)
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns oneDNN on by itself only on CPUs with AVX-512 or AMX; on others (the
# AVX2 AMD EPYC here) a WRN training step is 1.8x slower without it (README).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from throughput_report import RATIOS, ratios, single  # noqa: E402, F401

import keras_at  # noqa: E402
from keras_at.models import wide_resnet  # noqa: E402

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def sgd():
    return keras.optimizers.SGD(0.1, momentum=0.9)


def build(variant, args):
    """A callable running one step of a variant; each variant owns fresh models."""
    if variant in torch_reference.VARIANTS:
        return torch_reference.build(variant)
    keras.utils.set_random_seed(0)
    shape = (args.size, args.size, 3)
    student = wide_resnet(16, 1, input_shape=shape)
    teacher = wide_resnet(16, 2, input_shape=shape)
    if variant == "student":
        student.compile(optimizer=sgd(), loss=CE)
        return student.train_on_batch
    if variant == "teacher_forward":
        return lambda x, y: teacher.predict_on_batch(x)
    if variant == "core_kd":
        from keras.distillation import Distiller, LogitsDistillation

        core = Distiller(teacher=teacher, student=student,
                         distillation_losses=LogitsDistillation(temperature=4.0),
                         student_loss_weight=0.1)
        core.compile(optimizer=sgd(), loss=CE)
        return core.train_on_batch
    grad = {"beta": 0.0, "grad_beta": 1.0}
    weights = {"at": {}, "at_kd": {"alpha": 0.9}, "kd": {"beta": 0.0, "alpha": 0.9},
               "hint": {"beta": 0.0, "hint_beta": 1e3},
               "grad_at": grad, "grad_at_cached": grad, "teacher_gradient": grad}[variant]
    pairs = [] if weights is grad else "auto"
    distiller = keras_at.Distiller(student, teacher, pairs=pairs, **weights)
    distiller.compile(optimizer=sgd(), loss=CE)
    if variant == "teacher_gradient":
        # The part of a gradient-AT step that the cache saves: the teacher's J_T of the batch.
        return lambda x, y: distiller.teacher_input_gradients(x, y)
    if variant == "grad_at_cached":
        # The teacher's input gradients, computed once
        # (keras_at.data.teacher_gradients.cached_gradient_dataset).
        cache = {}

        def step(x, y):
            if "j" not in cache:
                cache["j"] = distiller.teacher_input_gradients(x, y)
            return distiller.train_on_batch((x, cache["j"]), y)

        return step
    return distiller.train_on_batch


def time_steps(step, x, y, steps):
    start = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    return (time.perf_counter() - start) / steps


def prepare(args, variants):
    """`(steps, x, y)`: each variant's step built and warmed up (compiled), and the batch.

    Every step returns host values (`train_on_batch`'s logs, numpy predictions and input
    gradients), so a call's time includes its device work on JAX's asynchronous dispatch too.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, 10, size=args.batch)
    steps = {v: build(v, args) for v in variants}
    for step in steps.values():
        time_steps(step, x, y, args.warmup)
    return steps, x, y


def run_round(steps, x, y, calls, r):
    """`{variant: seconds per step}` of round `r`: `calls` steps of each, in an order rotated
    by `r`, so every variant has its share of this machine's fast and slow spells."""
    variants = list(steps)
    order = variants[r % len(variants):] + variants[: r % len(variants)]
    return {v: time_steps(steps[v], x, y, calls) for v in order}


def measure(args, variants):
    """`{variant: [seconds per step of each round]}`."""
    steps, x, y = prepare(args, variants)
    samples = {v: [] for v in variants}
    start = time.perf_counter()
    for r in range(args.rounds):
        for v, seconds in run_round(steps, x, y, args.steps, r).items():
            samples[v].append(seconds)
        if throughput_workers.out_of_time(args, start):
            break
    return samples


def profile(step, x, y, steps, logdir, top=12):
    """Traces `steps` calls into `logdir`: `[(op type, ms per step, events per step)]`, costliest
    first. Events are the profiler's count, not the layers' (a WRN-16-1 step shows 30 forward
    Conv2D events for its 15 convolutions here): compare them between variants."""
    import tensorflow as tf

    tf.profiler.experimental.start(logdir)
    time_steps(step, x, y, steps)
    tf.profiler.experimental.stop()
    # TensorFlow's own converter of the trace into the profile plugin's op-statistics table.
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    planes = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    data, ok = plugin.xspace_to_tools_data(planes, "framework_op_stats", {})
    if not ok:
        return []
    table = json.loads(data)
    table = table[0] if isinstance(table, list) else table
    ids = [c["id"] for c in table["cols"]]
    totals, events = collections.Counter(), collections.Counter()
    for row in table["rows"]:
        cells = {i: (c or {}).get("v") for i, c in zip(ids, row["c"])}
        if cells["type"] != "IDLE":
            totals[cells["type"]] += (cells["total_self_time"] or 0) / 1e3 / steps
            events[cells["type"]] += (cells["occurrences"] or 0) / steps
    return [(name, ms, events[name]) for name, ms in totals.most_common(top)]


def peak_rss_of_this_process_mb() -> float:
    """The high-water mark of this process's own address space (Linux's VmHWM).

    Not `getrusage`'s `ru_maxrss`: Linux carries that over fork and exec, so a child started
    by a large parent would report the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("No VmHWM in /proc/self/status: --memory needs Linux.")


def environment(variants):
    """What a table's footer says of this process: backend, versions, device, XLA."""
    # How Keras compiles a model's steps here: jit_compile="auto" resolved by compile().
    probe = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    probe.compile(loss="mse")
    env = {"backend": keras.backend.backend(), "keras": keras.__version__,
           "cpus": os.cpu_count(), "jit_compile": bool(probe.jit_compile), "variants": variants,
           "torch": (torch_reference.version()
                     if set(variants) & set(torch_reference.VARIANTS) else None)}
    if env["backend"] == "jax":
        import jax

        devices = jax.devices()
        kind = devices[0].device_kind
        env.update(framework=f"JAX {jax.__version__}",
                   device=f"{len(devices)} x {kind}" if len(devices) > 1 else kind)
    else:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        env.update(framework=f"TensorFlow {tf.__version__}",
                   device=f"{len(gpus)} GPU" if gpus else "cpu",
                   onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS"))
    return env


def report(samples, args, rss=None):
    """This process's backend's markdown table (`throughput_report.single`)."""
    return single(samples, environment(list(samples)), args, rss)


def report_profiles(args, variants):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, 10, size=args.batch)
    for variant in variants:
        step = build(variant, args)
        time_steps(step, x, y, args.warmup)
        logdir = os.path.join(args.profile, variant)
        if os.path.exists(logdir):
            sys.exit(f"--profile: {logdir} exists; choose a new directory.")
        ops = profile(step, x, y, args.steps, logdir)
        print(f"\n{variant}: op self-time per step (ms, summed over threads) and profiler "
              f"events per step, trace in {logdir}")
        for name, ms, count in ops:
            print(f"  {name:40s} {ms:8.1f} {count:6.0f}")


def main(args):
    variants = (args.only,) if args.only else VARIANTS
    torch_here = args.backend == "tensorflow" or not args.worker
    if not args.only and not args.no_torch and torch_here and torch_reference.available():
        variants += torch_reference.VARIANTS
    variants = list(variants)
    if args.profile:
        report_profiles(args, variants)
        return
    if args.worker:
        steps, x, y = prepare(args, variants)
        throughput_workers.serve(environment(variants),
                                 lambda r: run_round(steps, x, y, args.steps, r))
        return
    samples = measure(args, variants)
    if args.json:
        print(json.dumps({"ms": {v: 1e3 * min(t) for v, t in samples.items()},
                          "peak_rss_mb": peak_rss_of_this_process_mb()}))
        return
    rss = ({v: throughput_workers.peak_rss_mb(v, args, args.backend) for v in variants}
           if args.memory else None)
    throughput_workers.write(report(samples, args, rss), args.out)


if __name__ == "__main__":
    main(ARGS)
