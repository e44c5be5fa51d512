"""Table 1 as a multi-seed grid: a student alone, with AT, F-ActT, KD and AT+KD from one teacher.

The teacher is trained once; then, for every seed, the student is trained five times with the
same initialisation and data order, each run a call of examples/cifar.py. The run directory
gets results.md (median and spread of the final test error per method, the paper's Table 1 row
beside them when the pair is one of its rows), results.json (every run, every epoch) and
results.png (test error per epoch for each method: median line, min-max band), plus one
cifar.py run directory per run.

    python examples/reproduce.py --quick     # `make demo`: Fashion-MNIST subset, 2 CPU cores
    python examples/reproduce.py             # Table 1's WRN-16-1 <- WRN-16-2 row, a GPU
    python examples/reproduce.py --arch nin  # its NIN-thin <- NIN-wide row

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
from concurrent.futures import ProcessPoolExecutor, as_completed

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import cifar  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_at import data  # noqa: E402

# Table 1 of the paper (CIFAR-10 test error, median of 5 runs): (student, teacher) -> column.
PAPER = {
    ("NIN-thin", "NIN-wide"): {"student": 9.38, "AT": 8.93, "F-ActT": 9.05, "KD": 8.55,
                               "AT+KD": 8.33, "teacher": 7.28},
    ("WRN-16-1", "WRN-16-2"): {"student": 8.77, "AT": 7.93, "F-ActT": 8.51, "KD": 7.41,
                               "AT+KD": 7.51, "teacher": 6.31},
    ("WRN-16-1", "WRN-40-1"): {"student": 8.77, "AT": 8.25, "F-ActT": 8.62, "KD": 8.39,
                               "AT+KD": 8.01, "teacher": 6.58},
    ("WRN-16-2", "WRN-40-2"): {"student": 6.31, "AT": 5.85, "F-ActT": 6.24, "KD": 6.08,
                               "AT+KD": 5.71, "teacher": 5.23},
}
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
    "test_every": 1, "jobs": 1,
}
QUICK = {
    "dataset": "fashion_mnist", "limit": 500, "test_limit": 2000, "epochs": 20,
    "teacher_epochs": 60, "lr_epochs": "11,16", "batch_size": 32, "seeds": 3, "test_every": 5,
    "jobs": 2,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"the CPU budget: {', '.join(f'{k}={v}' for k, v in QUICK.items())}")
    p.add_argument("--dataset", choices=("cifar10", "cifar100", "fashion_mnist", "digits"))
    p.add_argument("--seeds", type=int, help="runs per method, seeds 0..N-1")
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
    p.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2))
    p.add_argument("--out", help="run directory (default: a new runs/reproduce-<time> folder)")
    p.add_argument("--resume", action="store_true", help="finish an interrupted grid in --out")
    p.add_argument("--overwrite", action="store_true", help="delete an existing --out first")
    return p


def settle(args) -> dict:
    """The budget: --quick's or the full recipe's, with every explicitly given flag on top."""
    budget = dict(QUICK if args.quick else FULL)
    budget.update({k: getattr(args, k) for k in budget if getattr(args, k) is not None})
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        sys.exit(f"Unknown --methods {sorted(unknown)}; expected some of {list(METHODS)}.")
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


def grid(budget: dict, args, out: str) -> tuple[dict, dict]:
    """Trains the teacher and every student; returns its history and {(seed, method): history}.

    With `jobs` > 1 the runs go to a pool of worker processes: the students trained alone
    start beside the teacher, the others once the teacher is saved.
    """
    start = time.time()
    flags = common_flags(budget, args)
    teacher_dir = os.path.join(out, "teacher")
    # Its curve is not plotted: a test every quarter of its epochs is enough.
    teacher_flags = flags + [
        "--test-every", str(max(budget["test_every"], budget["teacher_epochs"] // 4)),
        "--teacher-only", "--teacher-depth", str(args.teacher_depth),
        "--teacher-width", str(args.teacher_width),
        "--teacher-epochs", str(budget["teacher_epochs"]), "--out", teacher_dir]
    students = {
        (seed, method): flags + METHODS[method] + [
            "--depth", str(args.depth), "--width", str(args.width), "--seed", str(seed),
            "--teacher", os.path.join(teacher_dir, "teacher.keras"),
            "--out", os.path.join(out, f"{method}-seed{seed}")]
        for seed in range(budget["seeds"]) for method in args.methods
    }
    alone = [key for key in students if key[1] == "student"]
    taught = [key for key in students if key[1] != "student"]

    def done(key, history):
        label = "teacher" if key == "teacher" else f"{key[1]}, seed {key[0]}"
        print(f"{label}: test error {100 * history['test_error']:.2f}% "
              f"({(time.time() - start) / 60:.1f} min)", flush=True)
        return history

    print(f"Teacher {names(args)[1]} on {budget['dataset']}, "
          f"{len(students)} student runs, {budget['jobs']} at a time.", flush=True)
    if budget["jobs"] <= 1:
        teacher = done("teacher", run(teacher_flags))
        histories = {key: done(key, run(students[key])) for key in alone + taught}
        return teacher, {key: histories[key] for key in students}
    # "spawn": fresh interpreters, not forks of a process whose TensorFlow is initialised.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(budget["jobs"], mp_context=context)
    try:
        teacher_future = pool.submit(run, teacher_flags)
        futures = {pool.submit(run, students[key]): key for key in alone}
        teacher = done("teacher", teacher_future.result())
        futures.update({pool.submit(run, students[key]): key for key in taught})
        histories = {futures[f]: done(futures[f], f.result()) for f in as_completed(futures)}
    finally:  # on a failed run, stop at once instead of training the queued ones
        pool.shutdown(cancel_futures=True)
    return teacher, {key: histories[key] for key in students}


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    budget = settle(args)
    out = _common.prepare_run_dir(args, "reproduce")
    start = time.time()
    teacher, histories = grid(budget, args, out)
    runs = [{"method": method, "seed": seed, "test_error": h["test_error"],
             "epochs": h["student"]} for (seed, method), h in histories.items()]
    student, teacher_name = names(args)
    results = {
        "dataset": budget["dataset"],
        "budget": budget,
        "student": student,
        "teacher": teacher_name,
        "teacher_test_error": teacher["test_error"],
        "teacher_epochs": teacher["teacher"],
        "paper_table1_cifar10": PAPER.get((student, teacher_name)),
        "seconds": time.time() - start,
        "summary": summarise(runs, args.methods),
        "runs": runs,
    }
    _common.write_json(os.path.join(out, "results.json"), results)
    table = markdown(results)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table)
    plot(results, os.path.join(out, "results.png"))
    print(f"\n{table}\nWritten to {out}/results.md, results.json and results.png.")
    return results


# === Report ===


def summarise(runs: list[dict], methods: list[str]) -> dict:
    summary = {}
    for method in methods:
        errors = [r["test_error"] for r in runs if r["method"] == method]
        summary[method] = {"median": float(np.median(errors)), "min": min(errors),
                           "max": max(errors), "errors": errors}
    return summary


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def markdown(results: dict) -> str:
    budget, summary = results["budget"], results["summary"]
    subset = (f"the first {budget['limit']} training images" if budget["limit"]
              else "all training images")
    tested = f"the first {budget['test_limit']}" if budget["test_limit"] else "all"
    paper = results["paper_table1_cifar10"] or {}
    lines = [
        f"# {results['student']} student, {results['teacher']} teacher: test error (%)",
        "",
        f"Dataset: {budget['dataset']} ({budget.get('dataset_note', 'given')}).",
        "",
        f"{budget['dataset']}, {subset}, {tested} test images; {budget['epochs']} epochs "
        f"(teacher {budget['teacher_epochs']}), batch {budget['batch_size']}, lr 0.1 x0.2 from "
        f"epochs {budget['lr_epochs']} (counted from 1), momentum zeroed at each drop; "
        f"{budget['seeds']} seeds; {results['seconds'] / 60:.1f} minutes in all. Final-epoch "
        "error of every run.",
        "",
        "| method | median | min - max | every seed (0, 1, ...) | paper, CIFAR-10 |",
        "|---|---|---|---|---|",
        f"| teacher | {_pct(results['teacher_test_error'])} | | one run "
        f"| {paper.get('teacher', '-')} |",
    ]
    for method, s in summary.items():
        seeds = ", ".join(_pct(e) for e in s["errors"])
        lines.append(f"| {method} | {_pct(s['median'])} | {_pct(s['min'])} - {_pct(s['max'])} "
                     f"| {seeds} | {paper.get(method, '-')} |")
    lines.append("")
    if "student" in summary:
        base = summary["student"]
        for method in (m for m in summary if m != "student"):
            diffs = [a - b for a, b in zip(summary[method]["errors"], base["errors"])]
            gap = summary[method]["median"] - base["median"]
            verdict = "below" if gap < 0 else "NOT below"
            lines.append(
                f"- {method} - student alone, per seed (same init and data order): "
                f"{', '.join(f'{100 * d:+.2f}' for d in diffs)}; {method}'s median is "
                f"{verdict} the student's alone ({100 * gap:+.2f})."
            )
        lines.append("")
    if paper:
        lines.append("The paper's column is its Table 1 row for this pair (CIFAR-10, 200 epochs, "
                     "median of 5 runs), for reference: a different dataset and budget unless "
                     "this is the full recipe.")
    else:
        lines.append(f"{results['student']} <- {results['teacher']} is not a row of the paper's "
                     "Table 1: no paper column.")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in results["summary"]:
        runs = [r["epochs"] for r in results["runs"] if r["method"] == method]
        epochs = [e["epoch"] for e in runs[0] if "test_error" in e]
        curves = np.array([[100 * e["test_error"] for e in run if "test_error" in e]
                           for run in runs])
        line, = ax.plot(epochs, np.median(curves, axis=0), marker="o", label=f"{method} (median)")
        ax.fill_between(epochs, curves.min(axis=0), curves.max(axis=0), alpha=0.2,
                        color=line.get_color())
    ax.axhline(100 * results["teacher_test_error"], color="k", linestyle="--",
               label=f"teacher {results['teacher']} (final)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error (%)")
    ax.set_title(f"{results['student']} on {results['dataset']}: "
                 f"{results['budget']['seeds']} seeds, min-max band")
    final = [100 * results["teacher_test_error"]] + [
        100 * s["max"] for s in results["summary"].values()]
    ax.set_ylim(0.8 * min(final), max(final) * 2)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
