"""What examples/reproduce.py writes: the paper's numbers beside the runs (results.md), and the
curves (results.png).

The paper's CIFAR-10 numbers are Table 1's row of the pair, with AT's from Table 2 or §4.1.1 when
a run changes the attention map or the pairs as they did.
"""

from __future__ import annotations

import _common
import numpy as np

# === The paper's numbers ===

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
# Table 2 (WRN-16-1 <- WRN-16-2, AT with each attention mapping function, median of 5 runs):
# (reduction, p) -> test error. The paper has no F_max^2.
TABLE2_PAIR = ("WRN-16-1", "WRN-16-2")
TABLE2 = {("sum", 1.0): 7.99, ("sum", 2.0): 7.93, ("sum", 4.0): 8.09, ("max", 1.0): 8.08}
# §4.1.1, the same pair, AT with the loss in one group only (F_sum^2): the paper's group1,
# group2, group3 are group0, group1, group2 here.
ONE_GROUP = {"group0": 8.11, "group1": 7.96, "group2": 7.97}


def paper_column(student: str, teacher: str, attention: str, p: float,
                 pairs: str) -> tuple[dict, list[str]]:
    """The paper's CIFAR-10 error for each column of this run, and where each comes from.

    Table 1's row of the pair, with AT's number from Table 2 (another attention map, every
    group) or §4.1.1 (F_sum^2, one group) where the run is one of theirs; a column whose
    setting the paper never ran (AT+KD with another map or pairs, F-ActT with other pairs) has
    none.
    """
    row = PAPER.get((student, teacher))
    if row is None:
        return {}, []
    # F_mean^p is F_sum^p / C: the same map once l2-normalised, as the loss compares them.
    key = ("sum" if attention == "mean" else attention, float(p))
    parsed = _common.parse_pairs(pairs)
    one = parsed[0][0] if len(parsed) == 1 and parsed[0][0] == parsed[0][1] else None
    sources = [f"Table 1's {student} <- {teacher} row"]
    if key == ("sum", 2.0) and pairs == "auto":
        return dict(row), sources
    column = {method: row[method] for method in ("student", "KD", "teacher")}
    if pairs == "auto":
        column["F-ActT"] = row["F-ActT"]  # full activations: the attention map does not matter
    if (student, teacher) == TABLE2_PAIR and pairs == "auto" and key in TABLE2:
        column["AT"] = TABLE2[key]
        sources.append(f"AT: Table 2's {map_name(*key)} row")
    elif (student, teacher) == TABLE2_PAIR and key == ("sum", 2.0) and one in ONE_GROUP:
        column["AT"] = ONE_GROUP[one]
        sources.append(f"AT: §4.1.1's loss in the paper's group{int(one[5:]) + 1} alone "
                       f"({one} here)")
    return column, sources


def map_name(reduction: str, p: float) -> str:
    """The paper's name of an attention map: F_sum^2, F_max^1, ..."""
    return f"F_{reduction}^{float(p):g}"


# === results.md and results.png ===


def summarise(runs: list[dict], methods: list[str]) -> dict:
    summary = {}
    for method in methods:
        errors = [r["test_error"] for r in runs if r["method"] == method]
        summary[method] = {"median": float(np.median(errors)), "min": min(errors),
                           "max": max(errors), "errors": errors}
    return summary


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def variant(attention: dict) -> str:
    """The attention transfer of the run, named as the paper does: `F_max^1 maps, pairs group1`."""
    pairs = "every group (auto)" if attention["pairs"] == "auto" else attention["pairs"]
    return f"{map_name(attention['reduction'], attention['p'])} maps, pairs {pairs}"


def markdown(results: dict) -> str:
    budget, summary, attention = results["budget"], results["summary"], results["attention"]
    subset = (f"the first {budget['limit']} training images" if budget["limit"]
              else "all training images")
    tested = f"the first {budget['test_limit']}" if budget["test_limit"] else "all"
    paper = results["paper_cifar10"]
    default = (attention["reduction"], float(attention["p"]), attention["pairs"]) == (
        "sum", 2.0, "auto")
    title = "" if default else f", AT with {variant(attention)}"
    teachers = [t["test_error"] for t in results["teachers"]]
    if len(teachers) == 1:
        teacher = (f"| teacher | {_pct(teachers[0])} | | one run (the paper's: median of 5, "
                   "--teacher-seeds 5) ")
    else:
        teacher = (f"| teacher | {_pct(results['teacher_test_error'])} | {_pct(min(teachers))} - "
                   f"{_pct(max(teachers))} | {', '.join(_pct(e) for e in teachers)} ")
    lines = [
        f"# {results['student']} student, {results['teacher']} teacher{title}: test error (%)",
        "",
        f"Dataset: {budget['dataset']} ({budget.get('dataset_note', 'given')}).",
        "",
        f"{budget['dataset']}, {subset}, {tested} test images; {budget['epochs']} epochs "
        f"(teacher {budget['teacher_epochs']}), batch {budget['batch_size']}, lr 0.1 x0.2 from "
        f"epochs {budget['lr_epochs']} (counted from 1), momentum zeroed at each drop; "
        f"{budget['seeds']} seeds, {len(teachers)} teacher(s) (student seed s learns from "
        f"teacher s mod {len(teachers)}); {results['seconds'] / 60:.1f} minutes in all. "
        f"Final-epoch error of every run. Attention transfer: {variant(attention)}.",
        "",
        "| method | median | min - max | every seed (0, 1, ...) | paper, CIFAR-10 |",
        "|---|---|---|---|---|",
        f"{teacher}| {paper.get('teacher', '-')} |",
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
        lines.append(f"The paper's column: {'; '.join(results['paper_sources'])} (CIFAR-10, 200 "
                     "epochs, median of 5 runs), for reference: a different dataset and budget "
                     "unless this is the full recipe. '-': the paper has no run of that "
                     "setting.")
    else:
        lines.append(f"{results['student']} <- {results['teacher']} is not a row of the paper's "
                     "Table 1: no paper column.")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: str | None = None):
    """results.png, as the paper's Fig. 7(b): per method the median test error (solid, with its
    min-max band) and the median training error (dashed), per epoch; returns the figure.

    The training error is Keras's running one over each epoch's batches, in training mode and
    on augmented images, as the authors' training loop reports it.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5))
    ax = figure.subplots()
    for method in results["summary"]:
        runs = [r["epochs"] for r in results["runs"] if r["method"] == method]
        epochs = [e["epoch"] for e in runs[0] if "test_error" in e]
        test = np.array([[100 * e["test_error"] for e in run if "test_error" in e]
                         for run in runs])
        line, = ax.plot(epochs, np.median(test, axis=0), marker="o", linewidth=2,
                        label=f"{method} test")
        ax.fill_between(epochs, test.min(axis=0), test.max(axis=0), alpha=0.2,
                        color=line.get_color())
        train = np.array([[100 * (1 - e["accuracy"]) for e in run] for run in runs])
        ax.plot([e["epoch"] for e in runs[0]], np.median(train, axis=0), linestyle="--",
                color=line.get_color(), label=f"{method} train")
    teachers = len(results["teachers"])
    ax.axhline(100 * results["teacher_test_error"], color="k", linestyle=":",
               label=f"teacher {results['teacher']} (final test"
               f"{f', median of {teachers}' if teachers > 1 else ''})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_title(f"{results['student']} on {results['dataset']}: "
                 f"{results['budget']['seeds']} seeds; test solid (min-max band), train dashed")
    final = [100 * results["teacher_test_error"]] + [
        100 * s["max"] for s in results["summary"].values()]
    ax.set_ylim(0, min(100, 2 * max(final)))
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure
