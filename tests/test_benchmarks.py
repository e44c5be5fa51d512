"""The throughput benchmark runs and reports what it claims (not its speed: benchmarks measure
that). Tiny batches keep it to seconds; the PyTorch reference is checked when torch imports."""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import throughput  # noqa: E402
import torch_reference  # noqa: E402

TINY = argparse.Namespace(batch=4, size=16, rounds=2, steps=1, warmup=1)


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
