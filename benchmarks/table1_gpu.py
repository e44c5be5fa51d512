"""Table 1's WRN-16-1 <- WRN-16-2 row on the full Fashion-MNIST within a time budget: the
teacher, the student alone and with AT, then KD and AT+KD while time is left, one seed.

Each phase is one examples/cifar.py run with the flags examples/reproduce.py gives it
(`reproduce.plan`: the authors' recipe at --epochs, the learning-rate drops stretched to them),
in a process of its own bounded by `timeout`. The teacher, the student and AT may each run
until the estimated time of the later ones of the three is all that is left; KD and AT+KD run
only when the estimate of a whole run still fits. A phase that runs out of time is reported as
such, with the epochs it finished. The table (reproduce.py's results.md, the paper's Table 1
CIFAR-10 numbers beside it), the phases and the estimate behind the epochs go to --out;
reproduce.py's results.md, results.json and results.png of the finished runs to the run
directory. `benchmarks/gpu.sh` runs it on a GPU machine; see ESTIMATE for its epochs.

    python benchmarks/table1_gpu.py --budget 330 --data-dir .gpu-wheels --out docs/table1_gpu.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import _common  # noqa: E402  (first: the Keras backend's environment)
import _training  # noqa: E402
import reproduce  # noqa: E402

CIFAR = os.path.join(ROOT, "examples", "cifar.py")
PHASES = ("teacher", "student", "AT", "KD", "AT+KD")
REQUIRED = 3  # the teacher, the student alone and AT; KD and AT+KD while time is left
KILL_AFTER = 5  # seconds between a phase's SIGTERM and its SIGKILL
# Table 1's recipe: the authors' learning-rate drops (epoch_step, from 1) over their epochs.
AUTHORS = argparse.Namespace(lr_epochs=_common.int_list(reproduce.FULL["lr_epochs"]),
                             epochs=reproduce.FULL["epochs"])

ESTIMATE = """\
The epochs are estimated, not measured on a GPU. Per epoch: 469 training steps of batch 128
(60,000 images) and the 10,000 test images in 40 batches of 256. On JAX a step is dispatched
asynchronously, so an epoch takes the longer of the host's and the GPU's share. The host's,
measured on a 2-core CPU under load: the numpy pipeline makes an augmented batch of 128
28x28x1 images in 1.4 ms (94,000 images/s, one thread; 40,000 images/s for CIFAR's 32x32x3,
docs/data_pipeline_jax.md), and Keras's fit loop fed by it, around a model too small to count,
takes 2.8 ms a step: 1.3 s an epoch. The GPU's: the AT step costs the student's step plus the
teacher's forward pass (0.99 on JAX, docs/throughput_jax.md), about 0.3 GFLOP an image (the
student's ~21M multiply-adds at 28x28, three times for forward and backward, and the teacher's
~83M), 37 GFLOP a batch of 128: 2-4 ms at the 10-20 TFLOP/s that such narrow convolutions (16
to 128 channels) sustain on an H100, 1-2 s an epoch. With the test pass and the epoch's backup,
about 3 s an epoch, planned at twice that. Each phase also starts Python and JAX, reads the
data and compiles its training and evaluation steps: planned at 40 s (the AT step compiled in
11 s on the 2-core CPU, where it then takes 0.56 s a step at 32x32, docs/throughput_jax.md:
over 4 minutes an epoch, which is why this runs on a GPU). The plan is the defaults of
--phase-seconds and --epoch-seconds; the phases' table gives the times measured."""


def drops(epochs: int) -> str:
    """--lr-epochs for `epochs`: the authors' drops at the same fractions of the run."""
    scaled = sorted({index + 1 for index in _training.drop_epochs(AUTHORS, epochs)})
    return ",".join(str(e) for e in scaled if 2 <= e <= epochs)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=330,
                   help="seconds for every phase together")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of every run (default: the most that the estimate fits in "
                   "--budget for all five runs)")
    p.add_argument("--phase-seconds", type=float, default=40,
                   help="estimated fixed cost of a run: start, data, compilation")
    p.add_argument("--epoch-seconds", type=float, default=6, help="estimated seconds an epoch")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit", type=int, default=None, help="training images (the first N)")
    p.add_argument("--test-limit", type=int, default=None, help="test images (the first N)")
    p.add_argument("--data-dir", default=None,
                   help="where Fashion-MNIST's four .gz files are (or its fashion-mnist/)")
    p.add_argument("--runs", default=None,
                   help="run directory (default: a new runs/table1-gpu-<time> folder)")
    p.add_argument("--out", default=os.path.join("docs", "table1_gpu.md"),
                   help="the markdown file written")
    args = p.parse_args(argv)
    args.epochs_estimated = args.epochs is None
    if args.epochs is None:
        spare = args.budget - len(PHASES) * args.phase_seconds
        args.epochs = max(1, math.floor(spare / (len(PHASES) * args.epoch_seconds)))
    if args.epochs < 1 or args.budget <= 0:
        p.error(f"--epochs {args.epochs} and --budget {args.budget:g} must be positive.")
    return args


def plan(args) -> tuple[argparse.Namespace, dict, str, dict]:
    """reproduce.py's arguments, budget, run directory and cifar.py flags of every phase."""
    argv = ["--dataset", "fashion_mnist", "--seeds", "1", "--methods", ",".join(PHASES[1:]),
            "--epochs", str(args.epochs), "--teacher-epochs", str(args.epochs),
            "--lr-epochs", drops(args.epochs), "--batch-size", str(args.batch_size),
            "--test-every", "1", "--jobs", "1", "--verbose", "2",
            "--out", args.runs or _common.default_out("table1-gpu")]
    for flag, value in (("--limit", args.limit), ("--test-limit", args.test_limit)):
        if value is not None:
            argv += [flag, str(value)]
    grid = reproduce.parser().parse_args(argv)
    budget = reproduce.settle(grid)
    out = _common.prepare_run_dir(grid, "reproduce")
    teachers, students = reproduce.plan(budget, grid, out)
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    flags = {"teacher": teachers[0] + data}
    flags.update({method: students[0, method] + data for method in PHASES[1:]})
    return grid, budget, out, flags


def run_dir(flags: list[str]) -> str:
    return flags[flags.index("--out") + 1]


def history(flags: list[str]) -> dict:
    return _common.read_json(os.path.join(run_dir(flags), "history.json"), {})


def run_phases(args, flags: dict) -> dict:
    """Runs the phases in order within --budget; returns {phase: record}."""
    estimate = args.phase_seconds + args.epochs * args.epoch_seconds
    deadline = time.monotonic() + args.budget
    records = {}
    for index, phase in enumerate(PHASES):
        left = deadline - time.monotonic()
        # A required phase leaves the later required ones their estimate; the others run only
        # when a whole run's estimate fits.
        limit = int(left - max(0, REQUIRED - 1 - index) * estimate) - KILL_AFTER
        needs_teacher = phase not in ("teacher", "student")
        if needs_teacher and records["teacher"]["status"] != "finished":
            records[phase] = {"status": "not run: the teacher did not finish"}
            continue
        if (index >= REQUIRED and left < estimate) or limit < 1:
            records[phase] = {"status": f"not run: {max(left, 0):.0f} s left, about "
                              f"{estimate:.0f} s needed"}
            continue
        print(f"== {phase}: examples/cifar.py {shlex.join(flags[phase])} (at most {limit} s)",
              flush=True)
        begin = time.monotonic()
        # SIGTERM at the limit, SIGKILL KILL_AFTER s later if that did not end it.
        code = subprocess.run(["timeout", "-k", str(KILL_AFTER), str(limit), sys.executable,
                               CIFAR, *flags[phase]], cwd=ROOT).returncode
        seconds = time.monotonic() - begin
        timed_out = f"timed out after {limit} s"
        status = {0: "finished", 124: timed_out, 137: timed_out}.get(
            code, f"failed (exit status {code})")
        print(f"== {phase}: {status} ({seconds:.0f} s)", flush=True)
        records[phase] = {"status": status, "seconds": seconds, "limit": limit,
                          "history": history(flags[phase])}
    return records


def phase_rows(records: dict, epochs: int) -> list[str]:
    rows = ["| phase | status | epochs done | seconds | seconds an epoch (median) | "
            "test error (%), last epoch run |", "|---|---|---|---|---|---|"]
    for phase, record in records.items():
        key = "teacher" if phase == "teacher" else "student"
        done = record.get("history", {}).get(key, [])
        per_epoch = sorted(r["seconds"] for r in done)
        median = f"{per_epoch[len(per_epoch) // 2]:.1f}" if per_epoch else ""
        error = f"{100 * done[-1]['test_error']:.2f}" if done else ""
        seconds = f"{record['seconds']:.0f}" if "seconds" in record else ""
        rows.append(f"| {phase} | {record['status']} | {len(done)} of {epochs} | {seconds} | "
                    f"{median} | {error} |")
    return rows


def devices() -> str:
    """The JAX devices, asked once the runs are over (asking takes the GPU's memory)."""
    import jax

    return ", ".join(sorted({f"{d.platform}: {d.device_kind}" for d in jax.devices()}))


def report(args, grid, budget, out, records: dict, seconds: float) -> tuple[str, bool]:
    """The markdown of --out, and whether the teacher, the student and AT all finished."""
    finished = {p for p, r in records.items() if r["status"] == "finished"}
    images = f"the first {args.limit} images of" if args.limit else "the full"
    lines = [f"# Table 1 on a GPU: WRN-16-1 <- WRN-16-2 on {images} Fashion-MNIST, JAX (XLA)",
             ""]
    if "teacher" in finished:
        teachers = {0: records["teacher"]["history"]}
        histories = {(0, p): records[p]["history"] for p in PHASES[1:] if p in finished}
        results = reproduce.collect(grid, budget, teachers, histories, seconds)
        table = reproduce.write(results, out)
        lines += ["#" + table, ""]  # its title one level down
    else:
        lines += ["The teacher did not finish: no table of test errors.", ""]
    lines += ["## Phases", "",
              f"Each phase one examples/cifar.py process (run directory {out}), bounded by "
              f"`timeout`; {args.budget:.0f} s for all of them, {seconds:.0f} s used. "
              "Seconds an epoch are Keras's, the test pass included.", ""]
    lines += phase_rows(records, args.epochs)
    schedule = (f"learning rate x0.2 from epochs {drops(args.epochs)}, counted from 1: the "
                "authors' 60, 120, 160 of 200 at the same fractions" if drops(args.epochs)
                else "no learning-rate drop in so few epochs")
    chosen = (f"the most that the estimate of {args.phase_seconds:g} s a phase plus "
              f"{args.epoch_seconds:g} s an epoch fits in {args.budget:g} s for all five runs"
              if args.epochs_estimated else "given by --epochs")
    lines += ["", "## The epochs", "",
              f"{args.epochs} epoch(s) for every run ({schedule}); {chosen}.", "", ESTIMATE, "",
              f"Devices: {devices()}. Python {sys.version.split()[0]}."]
    return "\n".join(lines) + "\n", set(PHASES[:REQUIRED]) <= finished


def main(argv=None) -> int:
    args = parse_args(argv)
    grid, budget, out, flags = plan(args)
    print(f"Table 1, WRN-16-1 <- WRN-16-2 on Fashion-MNIST: {args.epochs} epochs a run, "
          f"{args.budget:.0f} s for all phases; runs in {out}.", flush=True)
    _training.note_tensorboard()  # once, not once per phase
    start = time.monotonic()
    records = run_phases(args, flags)
    text, complete = report(args, grid, budget, out, records, time.monotonic() - start)
    if os.path.dirname(args.out):
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
    if os.path.isfile(args.out):
        print(f"{args.out} exists; overwriting it with this run's table.", flush=True)
    _common.write_text_atomically(args.out, text)
    with open(os.path.join(out, "phases.json"), "w") as f:
        json.dump({p: {k: v for k, v in r.items() if k != "history"}
                   for p, r in records.items()}, f, indent=1)
    print(f"\n{text}\nWritten to {args.out}.", flush=True)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
