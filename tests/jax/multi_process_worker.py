"""Run by test_multi_process.py: one of two JAX processes on 127.0.0.1 (`jax.distributed`).

`python multi_process_worker.py PROCESS_ID PORT OUT.json`: one CPU device per process, Gloo
collectives between them, `keras.distribution.DataParallel` over both devices. Each process
feeds its half of every global batch of 16 (`auto_shard_dataset=False`: the arrays are already
this process's); writes the history and the student's weights to OUT.json.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
process_id, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)

import keras  # noqa: E402
from test_distiller_jax import distiller, training_data  # noqa: E402
from test_multi_process import TERMS  # noqa: E402

keras.distribution.set_distribution(
    keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False))
x, y = training_data()
half = [i for start in range(0, len(x), 16) for i in range(start + 8 * process_id,
                                                            start + 8 * process_id + 8)]
model = distiller(**TERMS)
history = model.fit(x[half], y[half], batch_size=8, epochs=2, shuffle=False, verbose=0)
with open(out, "w") as f:
    json.dump({"devices": len(jax.devices()), "history": history.history,
               "weights": [keras.ops.convert_to_numpy(w).tolist()
                           for w in model.student.weights]}, f)
