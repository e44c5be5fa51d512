"""benchmarks/gpu.sh end to end with KERAS_AT_GPU_TINY=1 on this CPU, as on a GPU machine without
TensorFlow or Keras: the wheels installed into a folder of their own, Table 1's five runs on 256
Fashion-MNIST images (benchmarks/table1_gpu.py), then the throughput benchmark.

The wheels come from .gpu-wheels/ (benchmarks/gpu_wheels.sh) or else from .wheels/ (`make`'s),
and Fashion-MNIST from .gpu-wheels/fashion-mnist/ or wherever keras_at.data finds it offline;
without them the test is skipped. About 3.5 minutes on a 2-core CPU: five cifar.py processes
compiling WRN-16 steps, and the benchmark's ten variants.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# gpu.sh installs these with --no-deps: Keras and what it imports beyond JAX's dependencies.
NEEDED = ("keras", "absl_py", "h5py", "namex", "optree", "packaging", "rich", "markdown_it_py",
          "mdurl", "pygments", "typing_extensions")
FASHION = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
# Table 1's WRN-16-1 <- WRN-16-2 row of the paper (CIFAR-10), beside each method's error.
PAPER = {"teacher": "6.31", "student": "8.77", "AT": "7.93", "KD": "7.41", "AT+KD": "7.51"}


def wheels_folder(tmp_path):
    """A folder as gpu_wheels.sh makes it, of links to wheels and data already here."""
    sources = [os.path.join(ROOT, d) for d in (".gpu-wheels", ".wheels")]
    wheels = {}
    for source in filter(os.path.isdir, sources):
        for name in sorted(os.listdir(source)):
            project = name.split("-")[0].lower()
            if name.endswith(".whl") and project in NEEDED:
                wheels.setdefault(name, os.path.join(source, name))
    missing = set(NEEDED) - {name.split("-")[0].lower() for name in wheels}
    if missing:
        pytest.skip(f"no wheels of {sorted(missing)} in .gpu-wheels/ or .wheels/: run "
                    "benchmarks/gpu_wheels.sh (or make)")
    data = [os.path.join(ROOT, ".gpu-wheels", "fashion-mnist"),
            "/usr/share/datasets/fashion-mnist",
            os.path.join(os.path.expanduser("~"), ".keras", "datasets", "fashion-mnist")]
    fashion = next((d for d in data if os.path.isfile(os.path.join(d, FASHION[0]))), None)
    if fashion is None:
        pytest.skip("Fashion-MNIST is not on disk (apt-get install dataset-fashion-mnist)")
    folder = tmp_path / "gpu-wheels"
    (folder / "fashion-mnist").mkdir(parents=True)
    for name, path in wheels.items():
        os.symlink(path, folder / name)
    for name in FASHION:
        os.symlink(os.path.join(fashion, name), folder / "fashion-mnist" / name)
    return folder


@pytest.mark.slow  # Python processes: gpu.sh, pip, five cifar.py runs, throughput.py
@pytest.mark.timeout(900)
def test_gpu_script_writes_table1_and_throughput_with_tiny_settings(tmp_path):
    wheels = wheels_folder(tmp_path)
    out, runs = tmp_path / "out", tmp_path / "runs"
    env = {**os.environ, "KERAS_AT_GPU_TINY": "1", "PYTHON": sys.executable,
           "WHEELS": str(wheels), "GPU_SITE": str(tmp_path / "site")}
    env.pop("PYTHONPATH", None)  # gpu.sh sets it: its wheels, then this checkout
    env.pop("XLA_FLAGS", None)
    done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu.sh"), "--out", str(out),
                           "--runs", str(runs)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=800)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "keras 3." in done.stdout and "on jax" in done.stdout
    # Once for the five runs where TensorFlow is missing, as on the GPU machine.
    skipped = "TensorBoard logs skipped: TensorFlow is not installed"
    assert done.stdout.count(skipped) == (0 if importlib.util.find_spec("tensorflow") else 1)

    table = (out / "table1_gpu.md").read_text()
    assert table.startswith("# Table 1 on a GPU: WRN-16-1 <- WRN-16-2 on the first 256 images "
                            "of Fashion-MNIST, JAX (XLA)\n")
    assert "Dataset: fashion_mnist (given by --dataset)." in table
    for method, paper in PAPER.items():
        row = re.search(rf"^\| {re.escape(method)} \| (\d+\.\d\d) \|.*\| {paper} \|$", table,
                        re.M)
        assert row, (method, table)
        assert 0 <= float(row.group(1)) <= 100
        phase = re.search(rf"^\| {re.escape(method)} \| finished \| 1 of 1 \| (\d+) \| "
                          rf"([\d.]+) \| {row.group(1)} \|$", table, re.M)
        assert phase, (method, table)  # the phase's last epoch is the table's error
    assert ("1 epoch(s) for every run (no learning-rate drop in so few epochs); given by "
            "--epochs.") in table
    assert "The epochs are estimated, not measured on a GPU." in table
    assert "Devices: cpu" in table

    # reproduce.py's own files in the run directory; every phase's flags and status.
    with open(runs / "results.json") as f:
        results = json.load(f)
    assert [r["method"] for r in results["runs"]] == ["student", "AT", "KD", "AT+KD"]
    assert results["budget"]["limit"] == 256 and results["dataset"] == "fashion_mnist"
    assert (runs / "results.md").read_text() in table.replace("## WRN", "# WRN", 1)
    with open(runs / "phases.json") as f:
        phases = json.load(f)
    assert {p: r["status"] for p, r in phases.items()} == dict.fromkeys(PAPER, "finished")

    throughput = (out / "throughput_gpu.md").read_text()
    assert throughput.startswith("### batch 8\n")
    assert re.search(r"^\| at \| [\d.]+ \|", throughput, re.M), throughput
