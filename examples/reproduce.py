"""Tables 1, 2 and §4.1.1 over seeds: a student alone, with AT, F-ActT, KD and AT+KD from a teacher.

The teacher is trained once (or once per seed: --teacher-seeds); then, for every seed, the
student is trained five times with the same initialisation and data order, each run a call of
examples/cifar.py. The run directory gets results.md (median and spread of the final test error
per method, the paper's numbers beside them when the pair and variant are among its runs),
results.json (every run, every epoch) and results.png (per epoch and method, as the paper's
Fig. 7(b): the median test error, solid, with its min-max band, and the median training error,
dashed), plus one cifar.py run directory per run.

Table 2 and §4.1.1 are the AT column of the WRN-16-1 <- WRN-16-2 row with another attention
map (--attention, --p: F_sum^p = sum, F_max^p = max; the paper's rows are F_sum, F_sum^2,
F_sum^4 and F_max^1) or one pair (--pairs: the paper's group1, group2, group3 are group0,
group1, group2 here), each the median of 5 runs; results.md then gives the paper's number for
that run beside AT. --teacher-seeds 5 trains five teachers, the students of seed s learning from
teacher s, so that the teacher column is a median of 5 as Table 1's caption says of every
column; by default one teacher teaches every seed and the column is that one run.

    python examples/reproduce.py --quick     # `make demo`: Fashion-MNIST subset, 2 CPU cores
    python examples/reproduce.py             # Table 1's WRN-16-1 <- WRN-16-2 row, a GPU
    python examples/reproduce.py --arch nin  # its NIN-thin <- NIN-wide row
    python examples/reproduce.py --methods student,AT --attention max --p 1  # a Table 2 row
    python examples/reproduce.py --methods AT --pairs group1   # §4.1.1: the paper's group2 alone

Each method is cifar.py's recipe (the authors' SGD schedule, momentum zeroed at each drop):
AT is beta 1e3; F-ActT is hint_beta 1e3 (the paper gives no value: ours) on the same group
pairs, l2-normalised, with 1x1 adapters only where the widths differ; KD is alpha 0.9, T 4;
AT+KD both. AT+KD's beta and F-ActT's hint_beta decay x0.2 at the learning-rate drops: the
paper decays them without saying how, so that schedule is ours (cifar.py --beta-decay).

--quick is a CPU budget: the first 500 Fashion-MNIST training images (scikit-learn's digits
when Fashion-MNIST is not on disk: it says so first, and results.md records it), a teacher
trained for 60 epochs and students for 20, 3 seeds, the error measured on the first 2000 test
images, two runs at a time: within 15 minutes on 2 CPU cores (results.md records the time it
took). In that low-data, short-budget regime the students are far from converged and the
teacher is clearly better; the numbers are not the paper's and only compare methods under the
same budget. The paper's need the full recipe on CIFAR-10.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import _training  # noqa: E402
import cifar  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from _report import PAPER, markdown, paper_column, plot, summarise  # noqa: E402

from keras_at import data  # noqa: E402

# cifar.py flags of each method; AT+KD's beta and F-ActT's hint_beta decay at the learning-rate
# drops (cifar.py's default, our schedule: the paper gives none).
METHODS = {
    "student": ["--beta", "0"],
    "AT": ["--beta", "1e3"],
    "F-ActT": ["--beta", "0", "--hint-beta", "1e3"],
    "KD": ["--beta", "0", "--alpha", "0.9"],
    "AT+KD": ["--beta", "1e3", "--alpha", "0.9"],
}
FASHION_MISSING = (
    "Dataset: scikit-learn's digits (8x8 images), NOT Fashion-MNIST as in the README: "
    "Fashion-MNIST is not on disk. To run the demo as documented, install it with\n"
    "    apt-get install dataset-fashion-mnist\n"
    "(or put its four .gz files in ~/.keras/datasets/fashion-mnist) and run it again."
)
# Table 1's recipe (the authors' cifar.py), and the CPU budget of --quick.
FULL = {
    "dataset": "cifar10", "limit": None, "test_limit": None, "epochs": 200,
    "teacher_epochs": 200, "lr_epochs": "60,120,160", "batch_size": 128, "seeds": 5,
    "test_every": 1, "jobs": 1, "teacher_seeds": 1,
}
QUICK = {
    "dataset": "fashion_mnist", "limit": 500, "test_limit": 2000, "epochs": 20,
    "teacher_epochs": 60, "lr_epochs": "11,16", "batch_size": 32, "seeds": 3, "test_every": 5,
    "jobs": 2, "teacher_seeds": 1,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"the CPU budget: {', '.join(f'{k}={v}' for k, v in QUICK.items())}")
    p.add_argument("--dataset", choices=("cifar10", "cifar100", "fashion_mnist", "digits"))
    p.add_argument("--seeds", type=int, help="runs per method, seeds 0..N-1")
    p.add_argument("--teacher-seeds", type=int,
                   help="teachers trained, seeds 0..N-1 (at most --seeds); the students of seed s "
                   "learn from teacher s mod N, so N = --seeds gives each seed its own teacher "
                   "and the teacher column the median of N runs, as Table 1's caption says; "
                   "default 1: one teacher for every seed, and the teacher column one run")
    p.add_argument("--methods", type=lambda t: t.split(","), default=list(METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--epochs", type=int, help="student epochs")
    p.add_argument("--teacher-epochs", type=int)
    p.add_argument("--lr-epochs", help="epochs (from 1, the authors' epoch_step) from which "
                   "the students' learning rate is x0.2 (stretched to the teacher's epochs for "
                   "the teacher)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--limit", type=int, help="training examples (the first N)")
    p.add_argument("--test-limit", type=int, help="test examples (the first N, fixed)")
    p.add_argument("--test-every", type=int, help="evaluate every N epochs (and the last)")
    p.add_argument("--jobs", type=int, help="runs trained at the same time, each in its own "
                   "process (on a CPU, one TensorFlow process keeps about one core busy with "
                   "these small networks)")
    p.add_argument("--arch", default="wrn", choices=cifar.ARCHS,
                   help="wrn: WRN-depth-width <- WRN-teacher-depth-teacher-width; nin: Table 1's "
                   "NIN-thin <- NIN-wide row")
    p.add_argument("--depth", type=int, default=16)
    p.add_argument("--width", type=int, default=1)
    p.add_argument("--teacher-depth", type=int, default=16)
    p.add_argument("--teacher-width", type=int, default=2)
    g = p.add_argument_group("the attention transfer of AT and AT+KD (Table 2, §4.1.1)")
    g.add_argument("--attention", default="sum", choices=("sum", "mean", "max"),
                   help="reduction over channels of the attention map |A|^p (Table 2: sum, max)")
    g.add_argument("--p", type=float, default=2.0, help="exponent p of the attention map "
                   "(Table 2: F_sum = sum 1, F_sum^2, F_sum^4, F_max^1 = max 1)")
    g.add_argument("--pairs", type=pairs_text, default="auto",
                   help="'auto' (every group) or the layers to pair, e.g. group1 (§4.1.1, whose "
                   "group1, group2, group3 are group0, group1, group2 here); F-ActT pairs them "
                   "too")
    p.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2))
    p.add_argument("--out", help="run directory (default: a new runs/reproduce-<time> folder)")
    p.add_argument("--resume", action="store_true", help="finish an interrupted grid in --out")
    p.add_argument("--overwrite", action="store_true", help="delete an existing --out first")
    return p


def pairs_text(text: str) -> str:
    """--pairs as given (cifar.py parses it again), once checked by cifar.py's parser."""
    _common.parse_pairs(text)
    return text.strip()


def settle(args) -> dict:
    """The budget: --quick's or the full recipe's, with every explicitly given flag on top."""
    budget = dict(QUICK if args.quick else FULL)
    budget.update({k: getattr(args, k) for k in budget if getattr(args, k) is not None})
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        sys.exit(f"Unknown --methods {sorted(unknown)}; expected some of {list(METHODS)}.")
    if not 1 <= budget["teacher_seeds"] <= budget["seeds"]:
        sys.exit(f"--teacher-seeds {budget['teacher_seeds']}: expected 1 to --seeds "
                 f"({budget['seeds']}) teachers.")
    if not args.p > 0:
        sys.exit(f"--p {args.p:g}: the attention map's exponent must be positive.")
    budget["dataset_note"] = "given by --dataset" if args.dataset else "the default"
    if args.quick and args.dataset is None:
        if on_disk("fashion_mnist"):
            budget["dataset_note"] = "found on disk"
            print("Dataset: Fashion-MNIST (found on disk), as in the README.", flush=True)
        else:
            budget["dataset"] = "digits"
            budget["dataset_note"] = ("Fashion-MNIST is not on disk (apt-get install "
                                      "dataset-fashion-mnist), so scikit-learn's digits")
            print(f"{'=' * 78}\n{FASHION_MISSING}\n{'=' * 78}", flush=True)
    return budget


def on_disk(name: str) -> bool:
    """Whether `keras_at.data` finds the dataset without downloading it."""
    previous = os.environ.get("KERAS_AT_OFFLINE")
    os.environ["KERAS_AT_OFFLINE"] = "1"
    try:
        data.load(name, "test", limit=1)
        return True
    except FileNotFoundError:
        return False
    finally:
        if previous is None:
            del os.environ["KERAS_AT_OFFLINE"]
        else:
            os.environ["KERAS_AT_OFFLINE"] = previous


def run(argv: list[str]) -> dict:
    """One cifar.py run, in this process; a fresh Keras session each time."""
    keras.backend.clear_session()
    return cifar.main(argv)


def names(args) -> tuple[str, str]:
    """The student's and the teacher's names, as Table 1 writes them."""
    if args.arch == "nin":
        return "NIN-thin", "NIN-wide"
    return (f"WRN-{args.depth}-{args.width}", f"WRN-{args.teacher_depth}-{args.teacher_width}")


def common_flags(budget: dict, args) -> list[str]:
    flags = ["--arch", args.arch, "--dataset", budget["dataset"],
             "--batch-size", str(budget["batch_size"]),
             "--epochs", str(budget["epochs"]), "--lr-epochs", budget["lr_epochs"],
             "--test-every", str(budget["test_every"]), "--verbose", str(args.verbose)]
    for key in ("limit", "test_limit"):
        if budget[key] is not None:
            flags += [f"--{key.replace('_', '-')}", str(budget[key])]
    return flags + (["--resume"] if args.resume else [])


def variant_flags(args) -> list[str]:
    """cifar.py's attention map and pairs: AT's and AT+KD's (F-ActT reads the pairs)."""
    return ["--attention", args.attention, "--p", f"{args.p:g}", "--pairs", args.pairs]


def teacher_dir(out: str, seed: int, count: int) -> str:
    return os.path.join(out, "teacher" if count == 1 else f"teacher-seed{seed}")


def plan(budget: dict, args, out: str) -> tuple[dict, dict]:
    """The cifar.py flags of every run: ({seed: teacher}, {(seed, method): student})."""
    flags = common_flags(budget, args)
    count = budget["teacher_seeds"]
    # Its curve is not plotted: a test every quarter of its epochs is enough.
    teachers = {
        seed: flags + [
            "--test-every", str(max(budget["test_every"], budget["teacher_epochs"] // 4)),
            "--teacher-only", "--teacher-depth", str(args.teacher_depth),
            "--teacher-width", str(args.teacher_width), "--seed", str(seed),
            "--teacher-epochs", str(budget["teacher_epochs"]),
            "--out", teacher_dir(out, seed, count)]
        for seed in range(count)
    }
    students = {
        (seed, method): flags + METHODS[method] + variant_flags(args) + [
            "--depth", str(args.depth), "--width", str(args.width), "--seed", str(seed),
            "--teacher", os.path.join(teacher_dir(out, seed % count, count), "teacher.keras"),
            "--out", os.path.join(out, f"{method}-seed{seed}")]
        for seed in range(budget["seeds"]) for method in args.methods
    }
    return teachers, students


def grid(budget: dict, args, out: str) -> tuple[dict, dict]:
    """Trains the teachers and every student: ({seed: teacher history}, {(seed, method): history}).

    With `jobs` > 1 the runs go to a pool of worker processes: the students trained alone
    start beside the teachers, the others once their teacher is saved.
    """
    start = time.time()
    teacher_flags, students = plan(budget, args, out)
    count = len(teacher_flags)

    def done(key, history):
        seed, method = key
        label = "teacher" if key == (0, "teacher") and count == 1 else f"{method}, seed {seed}"
        print(f"{label}: test error {100 * history['test_error']:.2f}% "
              f"({(time.time() - start) / 60:.1f} min)", flush=True)
        return history

    def taught_by(seed):
        return [key for key in students if key[1] != "student" and key[0] % count == seed]

    print(f"{count} teacher(s) {names(args)[1]} on {budget['dataset']}, "
          f"{len(students)} student runs, {budget['jobs']} at a time.", flush=True)
    histories = {}
    if budget["jobs"] <= 1:
        for seed, flags in teacher_flags.items():
            histories[seed, "teacher"] = done((seed, "teacher"), run(flags))
        for key in [key for key in students if key[1] == "student"] + [
                key for seed in teacher_flags for key in taught_by(seed)]:
            histories[key] = done(key, run(students[key]))
    else:
        # "spawn": fresh interpreters, not forks of a process whose TensorFlow is initialised.
        pool = ProcessPoolExecutor(budget["jobs"], mp_context=multiprocessing.get_context("spawn"))
        try:
            waiting = {pool.submit(run, flags): (seed, "teacher")
                       for seed, flags in teacher_flags.items()}
            waiting.update({pool.submit(run, students[key]): key
                            for key in students if key[1] == "student"})
            while waiting:
                finished, _ = wait(waiting, return_when=FIRST_COMPLETED)
                for future in finished:
                    key = waiting.pop(future)
                    histories[key] = done(key, future.result())
                    if key[1] == "teacher":
                        waiting.update({pool.submit(run, students[student]): student
                                        for student in taught_by(key[0])})
        finally:  # on a failed run, stop at once instead of training the queued ones
            pool.shutdown(cancel_futures=True)
    return ({seed: histories[seed, "teacher"] for seed in teacher_flags},
            {key: histories[key] for key in students})


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    budget = settle(args)
    out = _common.prepare_run_dir(args, "reproduce")
    _training.note_tensorboard()
    start = time.time()
    teachers, histories = grid(budget, args, out)
    results = collect(args, budget, teachers, histories, time.time() - start)
    table = write(results, out)
    print(f"\n{table}\nWritten to {out}/results.md, results.json and results.png.")
    return results


def collect(args, budget: dict, teachers: dict, histories: dict, seconds: float) -> dict:
    """results.json's contents: the finished runs ({seed: teacher history}, {(seed, method):
    student history}), their summary and the paper's numbers beside them."""
    runs = [{"method": method, "seed": seed, "test_error": h["test_error"],
             "epochs": h["student"]} for (seed, method), h in histories.items()]
    student, teacher_name = names(args)
    paper, sources = paper_column(student, teacher_name, args.attention, args.p, args.pairs)
    teacher_errors = [h["test_error"] for h in teachers.values()]
    methods = [m for m in args.methods if any(r["method"] == m for r in runs)]
    return {
        "dataset": budget["dataset"],
        "budget": budget,
        "student": student,
        "teacher": teacher_name,
        "attention": {"reduction": args.attention, "p": args.p, "pairs": args.pairs},
        "teacher_test_error": float(np.median(teacher_errors)),
        "teachers": [{"seed": seed, "test_error": h["test_error"], "epochs": h["teacher"]}
                     for seed, h in teachers.items()],
        "paper_table1_cifar10": PAPER.get((student, teacher_name)),
        "paper_cifar10": paper,
        "paper_sources": sources,
        "seconds": seconds,
        "summary": summarise(runs, methods),
        "runs": runs,
    }


def write(results: dict, out: str) -> str:
    """Writes results.json, results.md and results.png into `out`; returns the markdown."""
    _common.write_json(os.path.join(out, "results.json"), results)
    table = markdown(results)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table)
    plot(results, os.path.join(out, "results.png"))
    return table


if __name__ == "__main__":
    main()
