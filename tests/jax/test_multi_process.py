"""Two JAX processes on 127.0.0.1 (`jax.distributed`, Gloo): one process's losses and weights.

Each process has one CPU device; `keras.distribution.DataParallel` spans both. Process i
feeds the i-th half of each global batch (`multi_process_worker.py`).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from test_distiller_jax import distiller, training_data

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="needs KERAS_BACKEND=jax")
HERE = os.path.dirname(os.path.abspath(__file__))
# AT and KD: collectives in the step and in the metrics. Every term over two devices, gradient
# terms included, is test_distiller_jax's DataParallel test, in one process.
TERMS = {"beta": 1e3, "alpha": 0.5}


@pytest.mark.slow  # Python processes
def test_two_processes_give_one_processes_losses_and_weights(tmp_path):
    # Imported here: multi_process_worker.py imports this module without tests/ on its path.
    from conftest import reserved_ports

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [HERE, os.path.dirname(os.path.dirname(HERE)), os.environ.get("PYTHONPATH", "")])}
    procs = []
    with reserved_ports(1) as (port,):  # the coordinator's, held here until the workers exit
        try:
            procs = [subprocess.Popen([sys.executable,
                                       os.path.join(HERE, "multi_process_worker.py"), str(i),
                                       str(port), str(tmp_path / f"{i}.json")], env=env)
                     for i in range(2)]
            codes = [p.wait(timeout=420) for p in procs]  # within the test's 600 s
        finally:
            for p in procs:
                p.kill()
    assert codes == [0, 0]
    results = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(2)]
    assert [r["devices"] for r in results] == [2, 2]

    x, y = training_data()
    model = distiller(**TERMS)
    one = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    for result in results:
        assert set(result["history"]) == set(one)
        for key in one:
            np.testing.assert_allclose(result["history"][key], one[key], rtol=1e-4, err_msg=key)
        for theirs, ours in zip(result["weights"], model.student.weights):
            np.testing.assert_allclose(np.array(theirs), keras.ops.convert_to_numpy(ours),
                                       rtol=1e-4, atol=1e-5)
