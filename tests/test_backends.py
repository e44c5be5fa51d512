"""The Distiller on TensorFlow and on JAX: one step from the same weights, the same numbers.

Each backend runs in its own process (Keras reads `KERAS_BACKEND` once): `backend_step.py`.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def run_step(backend, directory):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, os.path.join(HERE, "backend_step.py"), str(directory)],
                   env=env, check=True, timeout=240)
    return dict(np.load(directory / f"{backend}.npz"))


@pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                    reason="JAX is not installed (the test extra installs jax[cpu])")
@pytest.mark.slow  # Python processes
def test_one_step_on_jax_equals_tensorflow_for_every_term(tmp_path):
    tf_out = run_step("tensorflow", tmp_path)  # builds the networks, saves their weights
    jax_out = run_step("jax", tmp_path)  # loads them
    assert set(jax_out) == set(tf_out)
    logged = {key.split("/")[-1] for key in tf_out if "/train/" in key}
    assert logged >= {"loss", "task_loss", "at_loss", "kd_loss", "hint_loss", "grad_at_loss",
                      "symmetry_loss", "input_grad_loss", "symmetry_output_loss"}
    for key, value in tf_out.items():
        if "/train/" in key:
            assert jax_out[key] == pytest.approx(value, rel=2e-5, abs=1e-7), key
    after = [key for key in tf_out if "/after/" in key]
    assert any("moving_variance" in key for key in after)  # batch-norm statistics compared too
    for key in after:
        initial = tf_out[key.replace("/after/", "/initial/")]
        np.testing.assert_array_equal(jax_out[key.replace("/after/", "/initial/")], initial)
        moved = np.max(np.abs(tf_out[key] - initial))
        assert moved > 0, key  # the step changed every weight and statistic
        # Both backends moved it alike: the difference is float32 round-off of the move.
        np.testing.assert_allclose(jax_out[key], tf_out[key], rtol=1e-5, atol=1e-3 * moved,
                                   err_msg=key)
