"""The throughput benchmark's tables: its ratios, one backend's table, two backends' together.

Keras-free on purpose: `throughput.py --backend both` merges its two worker processes' samples
here without importing a Keras backend of its own (a process has one, fixed at import).

A run's samples are `{variant: [seconds per step of each round]}`; its environment `env` is
`throughput.environment()`'s dict (backend, versions, device, whether Keras compiles the steps
with XLA).
"""

from __future__ import annotations

import numpy as np

RATIOS = (
    # (name, numerator variants, denominator variants, goal)
    ("AT / (student step + teacher forward)", ["at"], ["student", "teacher_forward"], "<= 0.95"),
    ("AT+KD / core Keras KD", ["at_kd"], ["core_kd"], "<= 1.00"),
    ("AT+KD / AT", ["at_kd"], ["at"], "<= 1.02"),
    ("AT+KD / KD alone (the attention maps' cost)", ["at_kd"], ["kd"], ""),
    ("KD alone / core Keras KD", ["kd"], ["core_kd"], ""),
    ("F-ActT / AT", ["hint"], ["at"], ""),
    ("grad-AT / plain student", ["grad_at"], ["student"], "<= 3.0"),
    ("grad-AT, teacher's J cached / plain student", ["grad_at_cached"], ["student"], "<= 3.0"),
    ("grad-AT / (cached grad-AT + the teacher's J_T of the batch)", ["grad_at"],
     ["grad_at_cached", "teacher_gradient"], ""),
    ("core Keras KD / (student step + teacher forward)", ["core_kd"],
     ["student", "teacher_forward"], ""),
    ("AT images/s / authors' PyTorch AT images/s", ["torch_at"], ["at"], ">= 1.25"),
    ("PyTorch: AT / (student step + teacher forward)", ["torch_at"],
     ["torch_student", "torch_teacher_forward"], ""),
)

NAMES = {"tensorflow": "TensorFlow", "jax": "JAX"}


def ratios(samples):
    """`[(name, from best rounds, median of per-round ratios, goal)]` for the variants run."""
    rows = []
    for name, num, den, goal in RATIOS:
        if not all(v in samples for v in num + den):
            continue
        best = sum(min(samples[v]) for v in num) / sum(min(samples[v]) for v in den)
        per_round = np.sum([samples[v] for v in num], axis=0) / np.sum(
            [samples[v] for v in den], axis=0)
        rows.append((name, best, float(np.median(per_round)), goal))
    return rows


def rounds_run(samples) -> int:
    """The rounds every variant ran (fewer than asked when `--time-limit` stopped them)."""
    return min(len(t) for t in samples.values())


def describe(env) -> str:
    """The backend, its version and device, and how Keras compiles the steps."""
    xla = "steps XLA-compiled" if env["jit_compile"] else "XLA off"
    text = f"{env['framework']} on {env['device']} ({xla})"
    if env["backend"] == "tensorflow":
        text += f"; TF_ENABLE_ONEDNN_OPTS={env['onednn']}"
    return text


def _torch_note(env) -> str:
    if env.get("torch"):
        return f"PyTorch {env['torch']} in the same rounds"
    return "PyTorch not run (not installed, --no-torch, or not this backend's worker)"


def single(samples, env, args, rss=None) -> str:
    """One backend's markdown table: ms/step per variant, then every ratio twice."""
    ms = {v: 1e3 * min(t) for v, t in samples.items()}
    rows = ["| variant | ms/step | median ms | images/s |" + (" peak RSS (MB) |" if rss else ""),
            "|---|---:|---:|---:|" + ("---:|" if rss else "")]
    for v, t in ms.items():
        row = f"| {v} | {t:.1f} | {1e3 * np.median(samples[v]):.1f} | {args.batch / t * 1e3:.0f} |"
        rows.append(row + (f" {rss[v]:.0f} |" if rss else ""))
    rows += ["", "| ratio | best | paired | goal |", "|---|---:|---:|---|"]
    rows += [f"| {name} | {best:.2f} | {paired:.2f} | {goal} |"
             for name, best, paired, goal in ratios(samples)]
    rows += ["", f"batch {args.batch}, {args.size}x{args.size}x3, WRN-16-1 <- WRN-16-2, best of "
                 f"{rounds_run(samples)} rounds x {args.steps} steps (paired: median over rounds "
                 f"of the ratio within a round), keras {env['keras']}, {env['cpus']} CPU cores; "
                 f"{describe(env)}; {_torch_note(env)}"]
    return "\n".join(rows)


def _ms(samples, v, rss=None):
    """`best | median` (and `peak RSS |`) cells of `v`, dashes where it did not run."""
    if v not in samples:
        return " – | – |" + (" – |" if rss else "")
    cells = f" {1e3 * min(samples[v]):.1f} | {1e3 * np.median(samples[v]):.1f} |"
    return cells + (f" {rss[v]:.0f} |" if rss else "")


def both(samples, envs, args, rss=None) -> str:
    """Two backends' tables side by side: `samples`, `envs`, `rss` are keyed by backend
    (TensorFlow first), each backend's samples from the same rounds.

    `JAX / TF paired` is the median over rounds of the ratio of the two backends' times in the
    same round: the two worker processes alternate whole rounds, so each pair is seconds apart,
    not interleaved step by step as a backend's own variants are.
    """
    tf, jx = "tensorflow", "jax"
    a, b = samples[tf], samples[jx]
    mem = " peak RSS (MB) |"
    head = "| variant |" + "".join(
        f" {NAMES[k]} ms/step | median ms |" + (mem if rss else "") for k in (tf, jx))
    rows = [head + " JAX / TF best | paired |",
            "|---|" + "---:|" * (head.count("|") - 2) + "---:|---:|"]
    for v in list(a) + [v for v in b if v not in a]:
        row = f"| {v} |{_ms(a, v, rss and rss[tf])}{_ms(b, v, rss and rss[jx])}"
        if v in a and v in b:
            n = min(len(a[v]), len(b[v]))
            paired = np.median(np.array(b[v][:n]) / np.array(a[v][:n]))
            row += f" {min(b[v]) / min(a[v]):.2f} | {paired:.2f} |"
        else:
            row += " – | – |"
        rows.append(row)
    rows += ["", "| ratio | TensorFlow best | paired | JAX best | paired | goal |",
             "|---|---:|---:|---:|---:|---|"]
    by = {k: {name: (best, paired) for name, best, paired, _ in ratios(samples[k])}
          for k in (tf, jx)}
    for name, _, _, goal in RATIOS:
        if name in by[tf] or name in by[jx]:
            cells = "".join(" {:.2f} | {:.2f} |".format(*by[k][name]) if name in by[k]
                            else " – | – |" for k in (tf, jx))
            rows.append(f"| {name} |{cells} {goal} |")
    rows += ["", f"batch {args.batch}, {args.size}x{args.size}x3, WRN-16-1 <- WRN-16-2, best of "
                 f"{min(rounds_run(a), rounds_run(b))} rounds x {args.steps} steps. Each backend "
                 "runs in a worker process of its own, its variants interleaved step by step "
                 "(paired: median over rounds of the ratio within a round); the two processes "
                 "alternate whole rounds, the first of each round alternating, so `JAX / TF "
                 "paired` compares the same round's two measurements, seconds apart, not "
                 f"interleaved step by step. keras {envs[tf]['keras']}, {envs[tf]['cpus']} CPU "
                 f"cores; {describe(envs[tf])}; {describe(envs[jx])}; {_torch_note(envs[tf])}"]
    return "\n".join(rows)
