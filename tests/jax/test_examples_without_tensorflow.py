"""examples/cifar.py and examples/reproduce.py on JAX where TensorFlow is not installed: the
run's files and numbers, and the one line saying the TensorBoard logs were skipped.

`make test-jax` runs this where TensorFlow is not installed. Where it is, each script's
interpreter (and reproduce.py's worker processes) hide it first: a `sitecustomize` on
PYTHONPATH sets `sys.modules["tensorflow"] = None`, which `import tensorflow` and
`importlib.util.find_spec` both read as not installed.

WRN-10-1 <- WRN-10-2 on 128 digits for one epoch: most of each run's time is XLA compiling the
training and evaluation steps (cifar.py ~25 s, reproduce.py ~40 s on an idle 2-core CPU).
"""

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import slow_fixture

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")
TINY = ["--dataset", "digits", "--depth", "10", "--width", "1", "--teacher-depth", "10",
        "--teacher-width", "2", "--limit", "128", "--test-limit", "128", "--batch-size", "32"]
SKIPPED = "TensorBoard logs skipped: TensorFlow is not installed"
# The test error of a run: 0.xxx; a table cell: xx.xx (percent).
PERCENT = r"\d{1,3}\.\d\d"


@slow_fixture(scope="module")
def run_script(tmp_path_factory):
    """`(script, *args) -> CompletedProcess`: an example on JAX, TensorFlow hidden or absent."""
    hide = tmp_path_factory.mktemp("hide_tensorflow")
    (hide / "sitecustomize.py").write_text('import sys\nsys.modules["tensorflow"] = None\n')
    env = {**os.environ, "KERAS_BACKEND": "jax", "KERAS_AT_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(hide), ROOT, os.environ.get("PYTHONPATH", "")])}
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's run has

    def run(script, *args):
        done = subprocess.run([sys.executable, os.path.join(EXAMPLES, script), *map(str, args)],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "tensorflow" not in done.stderr.lower(), done.stderr[-3000:]
        return done

    return run


def test_cifar_trains_teacher_and_at_student_without_tensorflow(run_script, tmp_path):
    import keras

    import keras_at  # noqa: F401  (registers its layers: the saved models load after it)

    out = tmp_path / "at"
    # Two epochs, the second at the lowered rate: MomentumReset zeroes SGD's momentum on JAX.
    done = run_script("cifar.py", *TINY, "--epochs", "2", "--lr-epochs", "2", "--out", out)
    assert done.stdout.count(SKIPPED) == 1, done.stdout  # once, not once per phase
    assert "Training the teacher wrn-10-2" in done.stdout
    assert "pairs [('group0', 'group0'), ('group1', 'group1'), ('group2', 'group2')]" in (
        done.stdout)
    assert re.search(rf"wrn-10-1 test error: {PERCENT}% after 2 epochs", done.stdout)
    assert sorted(os.listdir(out)) == ["args.json", "history.json", "student.keras",
                                       "teacher.keras"]  # no logs/, no backup left behind
    with open(out / "history.json") as f:
        history = json.load(f)
    assert [r["lr"] for r in history["teacher"]] == pytest.approx([0.1, 0.02])
    assert [r["lr"] for r in history["student"]] == pytest.approx([0.1, 0.02])
    record = history["student"][-1]
    assert {"loss", "task_loss", "at_loss", "accuracy", "test_loss", "test_error",
            "test_top5_error", "lr", "seconds"} <= set(record)
    assert record["at_loss"] > 0
    assert 0 <= record["test_top5_error"] <= record["test_error"] <= 1
    assert history["test_error"] == record["test_error"]
    assert history["teacher_test_error"] == history["teacher"][-1]["test_error"]

    # The logged error is the saved student's, on the same 128 test digits.
    student = keras.saving.load_model(out / "student.keras")
    test = keras_at.data.load("digits", "test", batch_size=128, limit=128, pipeline="numpy")
    images, labels = test[0]
    predicted = keras.ops.convert_to_numpy(student.predict(images, verbose=0)).argmax(-1)
    assert record["test_error"] == pytest.approx(float((predicted != labels).mean()))


def test_reproduce_writes_its_table_without_tensorflow(run_script, tmp_path):
    out = tmp_path / "grid"
    done = run_script("reproduce.py", "--quick", *TINY, "--epochs", "1", "--teacher-epochs", "1",
                      "--lr-epochs", "", "--seeds", "1",
                      "--methods", "AT", "--jobs", "2", "--out", out)
    # Printed by reproduce.py once; its worker processes do not repeat it.
    assert done.stdout.count(SKIPPED) == 1, done.stdout
    assert {"results.md", "results.json", "results.png", "teacher", "AT-seed0"} <= set(
        os.listdir(out))
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    table = (out / "results.md").read_text()
    assert table in done.stdout
    assert table.startswith("# WRN-10-1 student, WRN-10-2 teacher: test error (%)\n")
    rows = {method: re.search(rf"^\| {re.escape(method)} \| ({PERCENT}) \|", table, re.M)
            for method in ("teacher", "AT")}
    assert all(rows.values()), table
    with open(out / "results.json") as f:
        results = json.load(f)
    assert float(rows["AT"].group(1)) == pytest.approx(
        100 * results["summary"]["AT"]["median"], abs=0.006)
    assert [(r["method"], r["seed"], len(r["epochs"])) for r in results["runs"]] == [
        ("AT", 0, 1)]
    assert not any(os.path.isdir(out / run / "logs") for run in ("teacher", "AT-seed0"))
