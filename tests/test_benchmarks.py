"""The throughput benchmark runs and reports what it claims (not its speed: benchmarks measure
that). Tiny batches keep it to seconds; the PyTorch reference is checked when torch imports."""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import throughput  # noqa: E402
import torch_reference  # noqa: E402

TINY = argparse.Namespace(batch=4, size=16, rounds=2, steps=1, warmup=1)
THROUGHPUT = os.path.join(os.path.dirname(os.path.abspath(throughput.__file__)), "throughput.py")
needs_jax = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason="jax is not installed: the JAX benchmark needs `pip install 'jax[cpu]'`")


def run_throughput(*args):
    """`throughput.py` in a process of its own (its Keras backend is chosen at import)."""
    out = subprocess.run([sys.executable, THROUGHPUT, "--rounds", "1", "--batch", "2", "--size",
                          "16", "--warmup", "1", "--no-torch", *args],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow  # ~15 s: times five training variants
def test_throughput_measures_each_variant_every_round_and_reports_its_ratios():
    variants = ["student", "teacher_forward", "at", "at_kd", "core_kd"]
    samples = throughput.measure(TINY, variants)
    assert set(samples) == set(variants)
    assert all(len(t) == TINY.rounds and min(t) > 0 for t in samples.values())

    rows = {name: (best, paired) for name, best, paired, _ in throughput.ratios(samples)}
    # Only the ratios whose variants ran, each from the same rounds' samples.
    assert set(rows) == {"AT / (student step + teacher forward)", "AT+KD / core Keras KD",
                         "AT+KD / AT", "core Keras KD / (student step + teacher forward)"}
    best = min(samples["at"]) / (min(samples["student"]) + min(samples["teacher_forward"]))
    assert rows["AT / (student step + teacher forward)"][0] == pytest.approx(best)
    per_round = np.array(samples["at_kd"]) / np.array(samples["at"])
    assert rows["AT+KD / AT"][1] == pytest.approx(float(np.median(per_round)))
    assert all(math.isfinite(v) and v > 0 for pair in rows.values() for v in pair)

    table = throughput.report(samples, TINY)
    assert table.count("\n| at |") == 1 and "| AT+KD / AT |" in table
    assert "grad-AT" not in table  # a ratio of variants that did not run is left out
    assert f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}" in table


def test_torch_reference_attention_loss_matches_keras_at():
    torch = pytest.importorskip("torch")
    import keras_at

    rng = np.random.default_rng(0)
    s = rng.normal(size=(3, 8, 8, 4)).astype("float32")
    t = rng.normal(size=(3, 8, 8, 6)).astype("float32")
    nchw = [torch.from_numpy(a).permute(0, 3, 1, 2) for a in (s, t)]
    # Their at(x) uses the channel mean, ours the sum: the l2-normalised maps are the same.
    theirs = (torch_reference._attention(nchw[0]) - torch_reference._attention(nchw[1]))
    np.testing.assert_allclose(float(theirs.pow(2).mean()), float(keras_at.at_loss(s, t)),
                               rtol=1e-5)


def test_torch_reference_steps_train_the_student():
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=8)
    step = torch_reference.build("torch_at")
    losses = [step(x, y) for _ in range(5)]
    assert losses[-1] < losses[0]
    assert torch_reference.build("torch_teacher_forward")(x, y).shape == (8, 10)
    with pytest.raises(ValueError, match="torch_at"):
        torch_reference.build("torch")


@needs_jax
@pytest.mark.slow  # Python processes
def test_throughput_both_backends_in_one_table():
    table = run_throughput("--backend", "both", "--only", "teacher_forward", "--rounds", "2")
    assert "| variant | TensorFlow ms/step | median ms | JAX ms/step | median ms |" in table
    row = re.search(r"^\| teacher_forward \|" + r" ([\d.]+) \|" * 6 + "$", table, re.MULTILINE)
    assert row, table
    tf_best, tf_median, jax_best, jax_median, ratio, paired = (float(g) for g in row.groups())
    assert 0 < tf_best <= tf_median and 0 < jax_best <= jax_median
    assert ratio == pytest.approx(jax_best / tf_best, rel=0.1, abs=0.01) and paired > 0
    footer = table.strip().splitlines()[-1]
    assert "best of 2 rounds" in footer and "alternate whole rounds" in footer
    assert "TensorFlow" in footer and "(XLA off)" in footer and "(steps XLA-compiled)" in footer


def test_throughput_refuses_to_profile_jax_with_tensorflows_profiler(capsys):
    with pytest.raises(SystemExit):
        throughput.parse_args(["--backend", "jax", "--profile", "runs/profile"])
    assert "run it with --backend tensorflow" in capsys.readouterr().err


def test_table1_gpu_fits_its_epochs_to_the_budget_and_stretches_the_authors_drops():
    """benchmarks/table1_gpu.py (gpu.sh's Table 1; run end to end by tests/jax/test_gpu_script.py):
    the epochs its estimate fits, and the authors' drops at the same fractions of them."""
    import table1_gpu

    assert table1_gpu.drops(200) == "60,120,160"  # the authors' own
    assert table1_gpu.drops(4) == "2,3,4" and table1_gpu.drops(7) == "3,5,7"
    assert table1_gpu.drops(1) == ""  # no drop before the only epoch
    # gpu.sh's budgets: 330 s with the throughput benchmark, 420 s with --only table1.
    assert table1_gpu.parse_args(["--budget", "330"]).epochs == 4
    assert table1_gpu.parse_args(["--budget", "420"]).epochs == 7
    given = table1_gpu.parse_args(["--epochs", "2"])
    assert given.epochs == 2 and not given.epochs_estimated
    with pytest.raises(SystemExit):
        table1_gpu.parse_args(["--epochs", "0"])
