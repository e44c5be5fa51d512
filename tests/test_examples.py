"""The example scripts, run as a user runs them: subprocesses on tiny data in a temporary folder.

Small networks (WRN-10-1/10-2 on scikit-learn's digits, ResNet-18/34 on 32x32 generated
images) and one or two short epochs keep the whole file to a few minutes on two CPU cores.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import slow_fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
ENV = {
    **os.environ,
    "KERAS_BACKEND": "tensorflow",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "KERAS_AT_OFFLINE": "1",
    "CUDA_VISIBLE_DEVICES": "",
}
# WRN-10-1 student, WRN-10-2 teacher, 128 digits, evaluated on 128 test digits.
TINY = ["--dataset", "digits", "--depth", "10", "--width", "1", "--teacher-depth", "10",
        "--teacher-width", "2", "--limit", "128", "--test-limit", "128", "--batch-size", "32"]


def script(name: str, *args: str, timeout: float = 480) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, name), *map(str, args)],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def example(name: str):
    """Imports examples/<name>.py as a module, as the scripts import each other."""
    sys.path.insert(0, EXAMPLES)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(EXAMPLES)


def history(run_dir) -> dict:
    with open(os.path.join(run_dir, "history.json")) as f:
        return json.load(f)


def event_files(directory) -> list[str]:
    return [f for _, _, files in os.walk(directory) for f in files if "tfevents" in f]


@slow_fixture(scope="module")
def cifar_run(tmp_path_factory):
    """One AT run of cifar.py that trains its teacher first: the run directory."""
    run_dir = tmp_path_factory.mktemp("cifar") / "at"
    ok(script("cifar.py", *TINY, "--epochs", "1", "--lr-epochs", "", "--out", run_dir))
    return run_dir


# === cifar.py ===


def test_cifar_trains_teacher_then_at_student_and_writes_the_run(cifar_run):
    import keras

    import keras_at  # noqa: F401  (registers its BatchNorm: the saved models load after it)

    for name in ("args.json", "history.json", "student.keras", "teacher.keras"):
        assert (cifar_run / name).is_file(), name
    h = history(cifar_run)
    assert [r["epoch"] for r in h["teacher"]] == [1]
    assert [r["epoch"] for r in h["student"]] == [1]
    record = h["student"][0]
    assert {"loss", "task_loss", "at_loss", "accuracy", "test_error", "lr"} <= set(record)
    assert 0 <= h["test_error"] <= 1 and h["test_error"] == record["test_error"]
    assert event_files(cifar_run / "logs" / "student" / "attention")
    assert event_files(cifar_run / "logs" / "teacher")
    assert not (cifar_run / "backup_student").exists()  # removed once the phase ended
    student = keras.saving.load_model(cifar_run / "student.keras")
    assert student.name == "wrn-10-1" and student.output.shape == (None, 10)


@pytest.mark.slow  # a Python process: ~30 s
def test_cifar_on_jax_beside_tensorflow_reads_tf_data_and_writes_tensorboard(tmp_path):
    """KERAS_BACKEND=jax where TensorFlow is installed: tf.data feeds the JAX steps (the test
    error's too), and TensorBoard's scalars and attention maps are written as on TensorFlow.
    Without TensorFlow: tests/jax/test_examples_without_tensorflow.py."""
    pytest.importorskip("jax")
    run_dir = tmp_path / "at"
    result = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "cifar.py"), *TINY, "--epochs", "1",
         "--lr-epochs", "", "--out", str(run_dir)],
        capture_output=True, text=True, env={**ENV, "KERAS_BACKEND": "jax"}, cwd=ROOT,
        timeout=480)
    ok(result)
    assert "TensorBoard logs skipped" not in result.stdout
    h = history(run_dir)
    assert 0 <= h["student"][0]["test_top5_error"] <= h["test_error"] <= 1
    assert event_files(run_dir / "logs" / "student" / "attention")
    assert event_files(run_dir / "logs" / "teacher")
    with open(run_dir / "args.json") as f:
        assert json.load(f)["epochs"] == 1


def test_cifar_refuses_to_overwrite_a_run_dir(cifar_run):
    before = (cifar_run / "history.json").read_text()
    result = script("cifar.py", *TINY, "--epochs", "1", "--out", cifar_run)
    assert result.returncode != 0
    assert str(cifar_run) in result.stderr and "--resume" in result.stderr
    assert (cifar_run / "history.json").read_text() == before


def test_cifar_resumes_a_killed_run_to_the_same_epochs(cifar_run, tmp_path):
    """AT+KD, killed during its second epoch, finishes with --resume: every epoch once,
    the learning rate and the decayed beta where the schedule puts them."""
    run_dir = tmp_path / "at-kd"
    args = [*TINY, "--limit", "256", "--epochs", "4", "--lr-epochs", "2,3", "--alpha", "0.9",
            "--teacher", cifar_run / "teacher.keras", "--out", run_dir]
    log = tmp_path / "killed.log"  # a file, not a pipe: its output can never block it
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, os.path.join(EXAMPLES, "cifar.py"), *map(str, args)],
            stdout=output, stderr=subprocess.STDOUT, env=ENV, cwd=ROOT,
        )
    # Written after the weights: the first epoch's backup is complete. The deadline only
    # stops a run that never writes it, within the test's time limit.
    backup = run_dir / "backup_student" / "training_metadata.json"
    deadline = time.monotonic() + 420
    try:
        while not backup.exists() and process.poll() is None:
            assert time.monotonic() < deadline, f"no backup after 420 s:\n{log.read_text()}"
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    output = log.read_text()
    assert process.returncode == -signal.SIGKILL, f"finished before it was killed:\n{output}"
    done = [r["epoch"] for r in history(run_dir)["student"]]
    assert 1 <= len(done) < 4 and not (run_dir / "student.keras").exists()

    resumed = ok(script("cifar.py", *args, "--resume"))
    assert "Epoch 1/4" not in resumed.stdout  # restored from the backup, not started again
    records = history(run_dir)["student"]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    # --lr-epochs 2,3 as the authors' epoch_step: epoch 2 (from 1) is the first at 0.02.
    assert [r["lr"] for r in records] == pytest.approx([0.1, 0.02, 0.004, 0.004])
    assert [r["beta"] for r in records] == pytest.approx([1000, 200, 40, 40])
    assert (run_dir / "student.keras").is_file()
    assert "finished already" in ok(script("cifar.py", *args, "--resume")).stdout


def test_resume_refuses_other_arguments(cifar_run):
    cifar = example("cifar")
    args = cifar.parser().parse_args(
        [*map(str, TINY), "--epochs", "3", "--lr-epochs", "", "--out", str(cifar_run), "--resume"])
    with pytest.raises(SystemExit, match="epochs: run has 1, given 3"):
        cifar._common.prepare_run_dir(args, "cifar")


# === Table 1's recipe: the schedule, the decays, the pairs and the adapters ===


def momentum_probe():
    """A callback recording the largest |momentum| at each epoch's start (after MomentumReset,
    which `fit` puts before the schedules) and at its end."""
    import keras

    class MomentumProbe(keras.callbacks.Callback):
        def _largest(self):
            momentums = getattr(self.model.optimizer, "momentums", None) or []
            return max((float(np.abs(m.numpy()).max()) for m in momentums), default=0.0)

        def on_epoch_begin(self, epoch, logs=None):
            self.begin.append(self._largest())

        def on_epoch_end(self, epoch, logs=None):
            self.end.append(self._largest())

    probe = MomentumProbe()
    probe.begin, probe.end = [], []
    return probe


def test_sgd_lowers_the_rate_from_the_authors_epochs_and_zeroes_momentum_there(tmp_path):
    import keras
    import tensorflow as tf

    cifar, _training = example("cifar"), example("_training")
    paper = cifar.parser().parse_args([])
    assert _training.drop_epochs(paper) == (59, 119, 159)  # epochs 60, 120, 160 counted from 1
    assert _training.drop_epochs(paper, 400) == (118, 238, 318)  # a teacher trained twice longer
    schedule = _training.lr_schedule(paper, steps_per_epoch=10)
    # The authors' torchnet loop: epoch e (from 0) runs at 0.1 * 0.2^#{s in epoch_step: s <= e+1}.
    authors = [0.1 * 0.2 ** sum(s <= e + 1 for s in (60, 120, 160)) for e in range(200)]
    for step in (0, 9):  # the first and last step of every epoch
        lrs = [float(schedule(e * 10 + step)) for e in range(200)]
        assert lrs == pytest.approx(authors)

    args = cifar.parser().parse_args(["--epochs", "4", "--lr-epochs", "2,3"])
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(6)(inputs))
    model.compile(optimizer=_training.sgd(args, 4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 6, 32)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    probe = momentum_probe()
    records = _training.fit(model, data, data, str(tmp_path), "net", 4, verbose=0,
                            schedules=[probe])
    assert [r["lr"] for r in records] == pytest.approx([0.1, 0.02, 0.004, 0.004])
    assert probe.begin[1:] == [0.0, 0.0, pytest.approx(probe.end[2])]  # zeroed at the two drops
    assert min(probe.end) > 0
    # A run resumed at a drop epoch zeroes the momentum again before that epoch's first step.
    resumed = momentum_probe()
    model.fit(data, initial_epoch=2, epochs=3, verbose=0, shuffle=False,
              callbacks=[_training.MomentumReset(), resumed])
    assert resumed.begin == [0.0] and resumed.end[0] > 0
    off = cifar.parser().parse_args(["--epochs", "4", "--lr-epochs", "2,3", "--no-momentum-reset"])
    assert _training.sgd(off, 4).momentum_reset_epochs == ()
    with pytest.raises(ValueError, match="counts epochs from 1"):
        _training.drop_epochs(cifar.parser().parse_args(["--lr-epochs", "0,3"]))


def test_table1_methods_decay_their_weights_and_pair_groups_with_adapters_where_widths_differ():
    import keras

    from keras_at import models

    reproduce = example("reproduce")
    cifar, _training = reproduce.cifar, example("_training")
    drops = (59, 119, 159)
    expected = {"student": set(), "AT": set(), "KD": set(),
                "AT+KD": {("beta", 0.2, drops)}, "F-ActT": {("hint_beta", 0.2, drops)}}
    assert list(reproduce.METHODS) == ["student", "AT", "F-ActT", "KD", "AT+KD"]
    for method, flags in reproduce.METHODS.items():
        args = cifar.parser().parse_args(flags)
        decays = _training.beta_schedule(args, _training.drop_epochs(args))
        assert {(d.weight, d.factor, d.epochs) for d in decays} == expected[method], method
        never = cifar.parser().parse_args([*flags, "--beta-decay", "1"])
        assert _training.beta_schedule(never, drops) == []

    f_actt = cifar.parser().parse_args(reproduce.METHODS["F-ActT"])
    # NIN-thin <- NIN-wide: each group's output (after its 3x3, 1x1, 1x1 convolutions and their
    # ReLUs, before the pooling), all three widths differing, so three adapters.
    nin = _training.distiller(models.nin("thin", input_shape=(8, 8, 1)),
                              models.nin("wide", input_shape=(8, 8, 1)), f_actt)
    assert nin.pairs == [("group0", "group0"), ("group1", "group1"), ("group2", "group2")]
    group0 = nin.student.get_layer("group0")
    assert isinstance(group0, keras.layers.Activation)
    assert group0._inbound_nodes[0].parent_nodes[0].operation.name == "group0_bn2"
    assert [tuple(a.kernel.shape) for a in nin.hint_adapters] == [
        (1, 1, 64, 160), (1, 1, 96, 192), (1, 1, 112, 256)]
    assert all(a.kernel_regularizer.l2 == pytest.approx(2.5e-4) for a in nin.hint_adapters)
    # WRN-10-1 <- WRN-16-1 (the same widths, different depths): regressed directly.
    same = _training.distiller(models.wide_resnet(10, 1, input_shape=(8, 8, 1)),
                               models.wide_resnet(16, 1, input_shape=(8, 8, 1)), f_actt)
    assert same.hint_adapters == [None, None, None]


def test_quick_demo_says_when_fashion_mnist_is_missing_and_records_it(tmp_path, monkeypatch,
                                                                     capsys):
    import dataclasses

    from keras_at.data import sources

    reproduce = example("reproduce")
    if reproduce.on_disk("fashion_mnist"):
        budget = reproduce.settle(reproduce.parser().parse_args(["--quick"]))
        assert budget["dataset"] == "fashion_mnist"
        assert capsys.readouterr().out.startswith("Dataset: Fashion-MNIST (found on disk)")
    for variable in ("KERAS_HOME", "TFDS_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path))
    hidden = dataclasses.replace(sources._SOURCES["fashion_mnist"], system_dirs=())
    monkeypatch.setitem(sources._SOURCES, "fashion_mnist", hidden)

    budget = reproduce.settle(reproduce.parser().parse_args(["--quick"]))
    out = capsys.readouterr().out
    assert budget["dataset"] == "digits"
    assert out.splitlines()[1].startswith("Dataset: scikit-learn's digits (8x8 images), NOT "
                                          "Fashion-MNIST")
    assert "\n    apt-get install dataset-fashion-mnist\n" in out
    runs = [{"method": "student", "seed": 0, "test_error": 0.25}]
    table = reproduce.markdown({
        "budget": budget, "summary": reproduce.summarise(runs, ["student"]), "seconds": 60,
        "student": "WRN-16-1", "teacher": "WRN-16-2", "teacher_test_error": 0.2,
        "teachers": [{"seed": 0, "test_error": 0.2}],
        "attention": {"reduction": "sum", "p": 2.0, "pairs": "auto"},
        "paper_cifar10": reproduce.PAPER[("WRN-16-1", "WRN-16-2")], "paper_sources": []})
    assert ("Dataset: digits (Fashion-MNIST is not on disk (apt-get install "
            "dataset-fashion-mnist), so scikit-learn's digits)") in table


# === gradient_at.py ===


needs_fashion_mnist = pytest.mark.skipif(
    not os.path.isdir("/usr/share/datasets/fashion-mnist") and not os.environ.get("CI"),
    reason="apt-get install dataset-fashion-mnist (CI installs it, so there this fails instead)",
)


@slow_fixture(scope="module")
def table3_run(tmp_path_factory):
    """One gradient_at.py run of three rows: (run directory, stdout)."""
    out = tmp_path_factory.mktemp("table3") / "run"
    result = ok(script("gradient_at.py", "--dataset", "fashion_mnist", "--limit", "64",
                       "--test-limit", "64", "--batch-size", "32", "--epochs", "1",
                       "--lr-epochs", "", "--methods", "grad_at,symmetry,at",
                       "--symmetry-output-beta", "0.5", "--out", out))
    with open(out / "results.json") as f:
        return out, result.stdout, json.load(f)


@needs_fashion_mnist
def test_gradient_at_trains_grad_at_on_cached_teacher_gradients_of_images_and_flips(table3_run):
    out, stdout, results = table3_run
    assert "Teacher input gradients of 64 images and their flips computed once" in stdout
    run = results["methods"]["grad_at"]
    assert run["weights"] == {"grad_beta": 1.0} and 0 <= run["test_error"] <= 1
    assert run["teacher"] == "nin-wide" and run["pairs"] == []
    record = history(out)["grad_at"][0]
    assert np.isfinite(record["grad_at_loss"]) and record["grad_at_loss"] > 0
    assert (out / "teacher.keras").is_file() and (out / "grad_at.keras").is_file()


@needs_fashion_mnist
def test_gradient_at_teachers_learn_by_table1s_recipe_by_default(table3_run):
    """Both teachers: lr 0.1 and coupled weight decay 5e-4 (with BN); the students: lr 0.01 and
    none, as --teacher-recipe table1 and the students' flags say."""
    import keras_at.models  # noqa: F401, registers keras_at's BatchNorm for loading

    out, stdout, results = table3_run
    h = history(out)
    assert h["teacher"][0]["lr"] == pytest.approx(0.1)
    assert h["at_teacher"][0]["lr"] == pytest.approx(0.1)
    assert h["grad_at"][0]["lr"] == pytest.approx(0.01)
    assert results["teacher_recipe"] == ("Table 1's recipe: lr 0.1, weight decay 0.0005, "
                                         "pad 4 + random crop + flip")
    for name in ("teacher", "at_teacher"):
        teacher = keras.saving.load_model(out / f"{name}.keras")
        assert teacher.get_layer("group0_conv0").kernel_regularizer.l2 == pytest.approx(2.5e-4)
        assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in teacher.layers)
    student = keras.saving.load_model(out / "grad_at.keras")
    assert student.get_layer("group0_conv0").kernel_regularizer is None
    with open(out / "results.md") as f:
        assert ("Teachers trained here: Table 1's recipe: lr 0.1, weight decay 0.0005, pad 4 + "
                "random crop + flip.") in f.read()


@pytest.mark.slow  # a Python process
def test_gradient_at_trains_a_bn_free_teacher_by_the_students_recipe(tmp_path):
    """--no-teacher-batch-norm --teacher-recipe table3: NIN-wide without BN, lr 0.01, no decay."""
    import keras_at.models  # noqa: F401

    out = tmp_path / "teacher"
    result = ok(script("gradient_at.py", "--dataset", "digits", "--limit", "64", "--test-limit",
                       "64", "--batch-size", "32", "--epochs", "1", "--lr-epochs", "",
                       "--methods", "kd", "--teacher-only", "--no-teacher-batch-norm",
                       "--teacher-recipe", "table3", "--out", out))
    assert "Training the teacher nin-wide-nobn" in result.stdout
    assert history(out)["teacher"][0]["lr"] == pytest.approx(0.01)
    teacher = keras.saving.load_model(out / "teacher.keras")
    assert not any(isinstance(layer, keras.layers.BatchNormalization)
                   for layer in teacher.layers)
    assert teacher.get_layer("group0_conv0").kernel_regularizer is None
    assert not (out / "at_teacher.keras").exists()  # kd alone needs no at row teacher


@needs_fashion_mnist
def test_gradient_at_at_row_pairs_convolution_outputs_with_its_own_teacher(table3_run):
    out, stdout, results = table3_run
    # §4.1.3: a teacher with BN and no ReLU before pooling, trained separately.
    assert results["at_teacher"] == "nin-wide-nopoolrelu" and results["teacher"] == "nin-wide"
    assert "Training the at teacher nin-wide-nopoolrelu" in stdout
    import keras_at.models  # noqa: F401, registers keras_at's BatchNorm for loading

    teacher = keras.saving.load_model(out / "at_teacher.keras")
    for g in (0, 1):
        assert isinstance(teacher.get_layer(f"group{g}"), keras.layers.BatchNormalization)
    run = results["methods"]["at"]
    assert run["teacher"] == "nin-wide-nopoolrelu" and run["weights"] == {"beta": 1000.0}
    # Pre-ReLU convolution outputs: the student's convolutions, the teacher's BN outputs.
    assert run["pairs"] == [["group0", "group0"], ["group1", "group1"],
                            ["group2_conv2", "group2_bn2"]]
    h = history(out)
    assert len(h["at_teacher"]) == 1 and h["at"][0]["at_loss"] > 0
    symmetry = results["methods"]["symmetry"]
    assert symmetry["weights"] == {"symmetry_beta": 10.0, "symmetry_output_beta": 0.5}
    assert h["symmetry"][0]["symmetry_output_loss"] > 0 and h["symmetry"][0]["symmetry_loss"] > 0
    with open(out / "results.md") as f:
        table = f.read()
    assert "| activation-based AT (convolution outputs) | nin-wide-nopoolrelu |" in table

    # A teacher with ReLU before pooling is refused for the at row, naming the layer.
    refused = script("gradient_at.py", "--dataset", "fashion_mnist", "--limit", "64",
                     "--test-limit", "64", "--epochs", "1", "--methods", "at", "--at-teacher",
                     out / "teacher.keras", "--out", out.parent / "refused")
    assert refused.returncode != 0
    assert "'nin-wide' has a ReLU before its pooling layers (group0, group1" in refused.stderr


def test_gradient_at_states_table3s_unpublished_settings_as_choices():
    gradient_at = example("gradient_at")
    args = gradient_at.parser().parse_args([])
    assert (args.epochs, args.lr, args.lr_epochs, args.lr_decay) == (200, 0.01, (60, 120, 160),
                                                                     0.2)
    assert args.weight_decay == 0.0 and args.temperature == 4.0
    assert args.symmetry_output_beta == 0.0  # eq. 6 alone unless asked
    epilog = gradient_at.parser().epilog
    assert epilog.startswith("Not given by the paper for Table 3, our choices: 200 epochs")
    assert "60,120,160" in epilog and "temperature 4" in epilog
    assert gradient_at.method_weights("symmetry", args) == {"symmetry_beta": 10.0}
    # The teachers: Table 1's NIN-wide with BN, by Table 1's recipe, which is cifar.py's.
    assert args.teacher_recipe == "table1" and args.teacher_batch_norm
    assert "Table 1's (--teacher-recipe)" in epilog
    table1 = example("cifar").parser().parse_args([])
    info = gradient_at.data.info("digits")
    flips = gradient_at.data.Augmentation(pad=0, flip=False)
    flags, augmentation, _ = gradient_at.teacher_recipe(args, info.augmentation, flips)
    assert (flags.lr, flags.weight_decay) == (table1.lr, table1.weight_decay) == (0.1, 5e-4)
    assert augmentation is info.augmentation and (args.lr, args.weight_decay) == (0.01, 0.0)
    own = gradient_at.parser().parse_args(["--teacher-recipe", "table3",
                                           "--no-teacher-batch-norm"])
    assert gradient_at.teacher_recipe(own, info.augmentation, flips)[:2] == (own, flips)
    assert not own.teacher_batch_norm
    with pytest.raises(SystemExit):
        gradient_at.parser().parse_args(["--teacher-recipe", "table2"])


# === reproduce.py ===


@pytest.mark.slow  # Python processes: 6 runs of cifar.py
@pytest.mark.timeout(900)
def test_reproduce_writes_table_json_and_plot_for_the_nin_row(tmp_path):
    """Two seeds, each with its own teacher (--teacher-seeds 2), AT with F_max^1 maps on two
    groups: the flags reach every cifar.py run, and results.md/.json/.png say what ran."""
    import keras

    import keras_at  # noqa: F401  (registers its BatchNorm: the saved models load after it)

    out = tmp_path / "grid"
    result = ok(script("reproduce.py", "--quick", *TINY, "--arch", "nin", "--epochs", "2",
                       "--teacher-epochs", "1", "--lr-epochs", "", "--test-every", "1",
                       "--seeds", "2", "--teacher-seeds", "2", "--methods", "student,AT",
                       "--attention", "max", "--p", "1", "--pairs", "group1,group2",
                       "--out", out, timeout=800))
    table = (out / "results.md").read_text()
    assert table in result.stdout  # printed at the end, as `make demo` shows it
    assert table.startswith("# NIN-thin student, NIN-wide teacher, AT with F_max^1 maps, pairs "
                            "group1,group2: test error (%)\n")
    assert "Dataset: digits (given by --dataset)." in table
    assert "2 seeds, 2 teacher(s) (student seed s learns from teacher s mod 2)" in table
    # Table 1's NIN row where the run is the paper's; none for AT with another map and pairs.
    paper = {"teacher": "7.28", "student": "9.38", "AT": "-"}
    for method, number in paper.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {method} |"))
        assert row.endswith(f"| {number} |"), row
    pairs = "pairs [('group1', 'group1'), ('group2', 'group2')]"
    assert result.stdout.count(f"nin-thin from nin-wide: {pairs}") == 2
    with open(out / "results.json") as f:
        results = json.load(f)
    assert results["dataset"] == "digits"
    assert results["attention"] == {"reduction": "max", "p": 1.0, "pairs": "group1,group2"}
    assert [(r["method"], r["seed"]) for r in results["runs"]] == [
        ("student", 0), ("AT", 0), ("student", 1), ("AT", 1)]
    assert all(len(r["epochs"]) == 2 for r in results["runs"])
    at = results["summary"]["AT"]
    assert at["median"] == pytest.approx(np.median(at["errors"]))

    # One teacher per seed, each trained from its seed; AT of seed s learns from teacher s.
    teachers = [t["test_error"] for t in results["teachers"]]
    assert [t["seed"] for t in results["teachers"]] == [0, 1]
    assert results["teacher_test_error"] == pytest.approx(np.median(teachers))
    teacher_row = next(line for line in table.splitlines() if line.startswith("| teacher |"))
    assert ", ".join(f"{100 * e:.2f}" for e in teachers) in teacher_row
    kernels = []
    for seed in (0, 1):
        with open(out / f"teacher-seed{seed}" / "args.json") as f:
            assert json.load(f)["seed"] == seed
        with open(out / f"AT-seed{seed}" / "args.json") as f:
            at_args = json.load(f)
        assert at_args["teacher"] == str(out / f"teacher-seed{seed}" / "teacher.keras")
        assert (at_args["attention"], at_args["p"]) == ("max", 1.0)
        assert at_args["pairs"] == [["group1", "group1"], ["group2", "group2"]]
        teacher = keras.saving.load_model(out / f"teacher-seed{seed}" / "teacher.keras")
        kernels.append(teacher.get_layer("group0_conv0").kernel.numpy())
    assert not np.allclose(*kernels)
    assert not (out / "teacher").exists()

    # results.png, as Fig. 7(b): per method a solid test curve and a dashed train curve.
    assert (out / "results.png").stat().st_size > 10_000
    figure = example("_report").plot(results)
    lines = {line.get_label(): line for line in figure.axes[0].lines}
    assert list(lines)[:4] == ["student test", "student train", "AT test", "AT train"]
    assert lines["AT train"].get_linestyle() == "--" and lines["AT test"].get_linestyle() == "-"
    train = [[100 * (1 - e["accuracy"]) for e in r["epochs"]] for r in results["runs"]
             if r["method"] == "AT"]
    np.testing.assert_allclose(lines["AT train"].get_ydata(), np.median(train, axis=0))
    assert list(lines["AT test"].get_xdata()) == [1, 2]


def test_reproduce_passes_table2_and_section_411_variants_and_gives_their_paper_numbers(
        monkeypatch):
    reproduce, cifar = example("reproduce"), example("cifar")
    args = reproduce.parser().parse_args(["--attention", "max", "--p", "1", "--pairs", "group1",
                                          "--seeds", "3", "--teacher-seeds", "2"])
    budget = reproduce.settle(args)
    teachers, students = reproduce.plan(budget, args, "runs/x")
    assert sorted(teachers) == [0, 1]
    for flags in teachers.values():  # a teacher is trained alone: no map, no pairs
        assert "--attention" not in flags and "--pairs" not in flags
    for (seed, _), flags in students.items():
        parsed = cifar.parser().parse_args(flags)
        assert (parsed.attention, parsed.p, parsed.pairs) == ("max", 1.0, [("group1", "group1")])
        assert parsed.seed == seed
        assert parsed.teacher == f"runs/x/teacher-seed{seed % 2}/teacher.keras"
    one = reproduce.plan(reproduce.settle(reproduce.parser().parse_args([])),
                         reproduce.parser().parse_args([]), "runs/y")
    assert list(one[0]) == [0] and one[0][0][-1] == "runs/y/teacher"
    for bad in (["--seeds", "2", "--teacher-seeds", "3"], ["--teacher-seeds", "0"],
                ["--p", "0"]):
        with pytest.raises(SystemExit):
            reproduce.settle(reproduce.parser().parse_args(bad))
    with pytest.raises(SystemExit):
        reproduce.parser().parse_args(["--pairs", "group1,:group2"])

    # One job: each teacher is trained before the students that learn from it.
    calls = []

    def record(flags):
        calls.append(flags)
        return {"test_error": 0.1, "student": [], "teacher": []}

    monkeypatch.setattr(reproduce, "run", record)
    args = reproduce.parser().parse_args(["--seeds", "3", "--teacher-seeds", "2", "--jobs", "1",
                                          "--methods", "student,AT"])
    teachers, histories = reproduce.grid(reproduce.settle(args), args, "runs/z")
    assert sorted(teachers) == [0, 1] and sorted(histories) == [
        (seed, method) for seed in range(3) for method in ("AT", "student")]
    outs = [flags[flags.index("--out") + 1] for flags in calls]
    assert outs[:2] == ["runs/z/teacher-seed0", "runs/z/teacher-seed1"]
    teacher_of = {}
    for position, flags in enumerate(calls):
        if "--teacher" in flags:
            teacher = os.path.dirname(flags[flags.index("--teacher") + 1])
            assert outs.index(teacher) < position
            teacher_of[outs[position]] = teacher
    assert teacher_of["runs/z/AT-seed2"] == "runs/z/teacher-seed0"  # seed 2 mod 2 teachers

    def paper(attention, p, pairs, pair=("WRN-16-1", "WRN-16-2")):
        return reproduce.paper_column(*pair, attention, p, pairs)

    # Table 2: every group, each attention mapping function; F_mean^p is F_sum^p's map.
    for (attention, p), error in {("sum", 1): 7.99, ("sum", 2): 7.93, ("sum", 4): 8.09,
                                  ("max", 1): 8.08, ("mean", 4): 8.09}.items():
        column, sources = paper(attention, p, "auto")
        assert column["AT"] == error and column["student"] == 8.77 and column["KD"] == 7.41
        assert column["F-ActT"] == 8.51
        assert ("AT+KD" in column) == ((attention, p) == ("sum", 2))
    assert "AT" not in paper("max", 2, "auto")[0]  # the paper has no F_max^2
    assert paper("max", 1, "auto")[1] == ["Table 1's WRN-16-1 <- WRN-16-2 row",
                                          "AT: Table 2's F_max^1 row"]
    # §4.1.1: one loss, in the paper's group1, group2 or group3 (group0..2 here).
    for group, error in {"group0": 8.11, "group1": 7.96, "group2": 7.97}.items():
        column, sources = paper("sum", 2, group)
        assert column["AT"] == error and "F-ActT" not in column and "AT+KD" not in column
        assert sources[1] == (f"AT: §4.1.1's loss in the paper's group{int(group[-1]) + 1} "
                              f"alone ({group} here)")
    assert "AT" not in paper("sum", 2, "group1,group2")[0]
    assert "AT" not in paper("max", 1, "group1")[0]
    assert "AT" not in paper("sum", 1, "auto", ("WRN-16-1", "WRN-40-1"))[0]  # Table 2's pair only
    assert paper("sum", 2, "auto", ("WRN-10-1", "WRN-10-2")) == ({}, [])


# === finetune.py and imagenet.py: ResNet-18 <- ResNet-34 on a generated image folder ===


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """DIR/{train,test}/<class>/*.png: two classes told apart by the colour of a square."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 4)):
        for label, colour in enumerate(((220, 40, 40), (40, 40, 220))):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 80, (48, 48, 3), dtype=np.uint8)
                image[12:36, 12:36] = colour
                Image.fromarray(image).save(folder / f"{i}.png")
    return root


RESNET_TINY = ["--image-size", "64", "--batch-size", "8", "--epochs", "1", "--lr-epochs", ""]


@slow_fixture(scope="module")
def finetune_run(image_folder, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finetune") / "at"
    result = ok(script("finetune.py", image_folder, *RESNET_TINY, "--out", run_dir))
    return run_dir, result.stdout


def test_finetune_fine_tunes_teacher_then_at_student_with_frozen_layers(finetune_run):
    import keras

    import keras_at.models  # noqa: F401  (registers BatchNorm for load_model, run alone too)

    run_dir, stdout = finetune_run
    assert "random initialisation" in stdout  # no ImageNet weights offline, and it says so
    h = history(run_dir)
    assert len(h["teacher"]) == len(h["student"]) == 1 and "at_loss" in h["student"][0]
    assert event_files(run_dir / "logs" / "student" / "attention")
    student = keras.saving.load_model(run_dir / "student.keras")
    assert student.name == "resnet18" and student.output.shape == (None, 2)
    names = [layer.name for layer in student.layers]
    for i, layer in enumerate(student.layers):
        if layer.weights:
            is_bn = isinstance(layer, keras.layers.BatchNormalization)
            assert layer.trainable == (i > names.index("group0") and not is_bn), layer.name


@pytest.mark.slow  # two ResNet-18s, one saved and loaded
def test_finetune_copies_pretrained_weights_by_name(tmp_path):
    finetune = example("finetune")
    from keras_at import models

    imagenet = models.resnet(18, num_classes=5, input_shape=(32, 32, 3))
    imagenet.save(tmp_path / "r18.keras")
    model = finetune.copy_pretrained(
        models.resnet(18, num_classes=2, input_shape=(32, 32, 3)), str(tmp_path / "r18.keras"))
    for layer in model.layers:
        same = [np.array_equal(a, b) for a, b in
                zip(layer.get_weights(), imagenet.get_layer(layer.name).get_weights())]
        assert all(same) if layer.name != "logits" else not any(same), layer.name


# === Table 4 and Table 5 recipes: defaults, freezing, CUB, when AT switches on ===


def test_finetune_recipe_freezes_stem_group0_and_bn_and_pairs_the_last_two_groups():
    finetune = example("finetune")
    from keras_at import models

    args = finetune.parser().parse_args(["data"])
    assert args.frozen_group == "group0" and not args.train_bn
    assert args.pairs == [("group2", "group2"), ("group3", "group3")] and args.beta == 1e3
    model = finetune.freeze(models.resnet(18, 3, (32, 32, 3)), "group0")
    trainable = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    frozen = {layer.name for layer in model.layers if not layer.trainable and layer.weights}
    assert {"conv1_conv", "conv1_bn", "v2_stack_0_block1_1_conv"} <= frozen  # stem and group0
    assert {"v2_stack_1_block1_1_conv", "v2_stack_3_block2_2_conv", "logits"} <= trainable
    assert not any(name.endswith("_bn") for name in trainable)  # every BN fixed
    # Table 4's KD row: KD alone (alpha 0.9, T 4), never decayed, with the AT row's recipe.
    training = example("_training")
    kd = finetune.parser().parse_args(["data", "--beta", "0", "--alpha", "0.9"])
    assert (kd.beta, kd.alpha, kd.temperature) == (0.0, 0.9, 4.0) and training.transfers(kd)
    assert training.transfer_schedules(kd) == []
    assert {k: v for k, v in vars(kd).items() if k not in ("beta", "alpha")} == {
        k: v for k, v in vars(args).items() if k not in ("beta", "alpha")}


def test_finetune_reads_cub_with_box_crops_and_central_evaluation_crop(tmp_path):
    from data_utils import CUB_COLOURS, write_cub

    from keras_at import data

    finetune, common = example("finetune"), example("_common")
    root = write_cub(tmp_path / "CUB_200_2011")
    args = finetune.parser().parse_args([str(root), "--image-size", "16", "--batch-size", "8"])
    train, test = common.folder_data(args)()
    info = data.info(root)
    for dataset, count, shade in ((train, 4, 1.0), (test, 3, 0.5)):
        images, labels = next(iter(dataset))
        assert images.shape == (count, 16, 16, 3)
        restored = (images.numpy() * np.asarray(info.std) + np.asarray(info.mean)) * 255
        colours = np.multiply(np.asarray(CUB_COLOURS)[labels.numpy()], shade)[:, None, None]
        assert np.abs(restored - colours).mean() < 2  # the box only, of each label's colour


def test_imagenet_defaults_are_table5s_and_the_transfer_start_is_a_function_of_the_epoch():
    imagenet, training = example("imagenet"), example("_training")
    args = imagenet.parser().parse_args(["data"])
    assert (args.epochs, args.lr_epochs, args.lr, args.lr_decay) == (100, (31, 61, 91), 0.1, 0.1)
    assert (args.batch_size, args.weight_decay, args.momentum) == (256, 1e-4, 0.9)
    # fb.resnet.torch: Nesterov, one optimizer state kept across the drops, floor((e - 1) / 30).
    assert args.nesterov and not args.momentum_reset
    assert training.drop_epochs(args) == (30, 60, 90)
    rate = training.lr_schedule(args, steps_per_epoch=1)
    fb_resnet = [0.1 * 0.1 ** ((epoch - 1) // 30) for epoch in range(1, 101)]
    assert [float(rate(epoch)) for epoch in range(100)] == pytest.approx(fb_resnet)
    optimizer = training.sgd(args, steps_per_epoch=1)
    assert optimizer.nesterov and optimizer.momentum_reset_epochs == ()
    assert args.transfer_start_epoch == 61 and args.beta == 1e3 and args.alpha == 0
    assert args.pairs == [("group2", "group2"), ("group3", "group3")]
    assert imagenet.parser().parse_args(["data", "--pairs", "auto"]).pairs == "auto"
    assert training.before_transfer(args).beta == 0 and args.beta == 1e3

    [gate] = training.transfer_schedules(args)
    # Whatever value a resumed run restores (0 before the start, 1e3 after), the same schedule.
    for current in (0.0, 1e3, 7.0):
        values = [gate.schedule(epoch, current) for epoch in range(100)]
        assert values == [0.0] * 60 + [1e3] * 40
    # With KD (beta decayed x0.2 at the learning-rate drops) both weights wait for epoch 61.
    kd = imagenet.parser().parse_args(["data", "--alpha", "0.9"])
    gates = {g.weight: g for g in training.transfer_schedules(kd)}
    assert gates["beta"].schedule(59, 0.0) == 0 and gates["alpha"].schedule(59, 0.0) == 0
    assert gates["beta"].schedule(60, 0.0) == pytest.approx(1e3 * 0.2**2)
    assert gates["beta"].schedule(95, 0.0) == pytest.approx(1e3 * 0.2**3)
    assert gates["alpha"].schedule(60, 0.0) == 0.9
    assert training.transfer_schedules(
        imagenet.parser().parse_args(["data", "--transfer-start-epoch", "1"])) == []
    with pytest.raises(SystemExit):
        imagenet.main(["data", "--epochs", "3", "--transfer-start-epoch", "4"])


@pytest.mark.slow  # a Python process
def test_imagenet_mirrors_over_two_cpu_devices_and_switches_at_on_at_the_start_epoch(
        image_folder, tmp_path, resnet34):
    # A freshly initialised ResNet-34 (finite features; finetune_run's teacher, trained with
    # random-init BN fixed, has exploded to NaN maps).
    teacher = tmp_path / "r34.keras"
    resnet34.save(teacher)
    result = ok(script("imagenet.py", image_folder, *RESNET_TINY, "--cpu-replicas", "2",
                       "--epochs", "3", "--lr", "0.01", "--lr-epochs", "2,3",
                       "--transfer-start-epoch", "3", "--limit", "8", "--test-limit", "4",
                       "--teacher", teacher, "--out", tmp_path / "r18"))
    assert "2 replica(s): MirroredStrategy" in result.stdout
    assert (tmp_path / "r18" / "student.keras").is_file()
    assert "pairs [('group2', 'group2'), ('group3', 'group3')]" in result.stdout
    records = history(tmp_path / "r18")["student"]
    assert [r["lr"] for r in records] == pytest.approx([0.01, 0.001, 0.0001])
    assert [r["beta"] for r in records] == [0.0, 0.0, 1e3]
    # Off before the start (not even computed), then traced into the step and minimised.
    assert "at_loss" not in records[0] and "at_loss" not in records[1]
    assert records[2]["at_loss"] > 0
    # loss = task_loss + the models' L2 penalty (+ beta * at_loss from the start epoch on).
    penalty = [r["loss"] - r["task_loss"] for r in records]
    assert penalty[0] == pytest.approx(penalty[1], rel=0.01)
    assert penalty[2] - penalty[1] == pytest.approx(1e3 * records[2]["at_loss"], rel=0.01)


# === hub_models.py: keras-hub tasks with their preprocessors, presets ===


@pytest.mark.slow  # a Python process
def test_hub_models_trains_a_keras_hub_teacher_and_student_on_raw_digits():
    """About 50 s on two shared cores: imports and three networks traced; 64 digits, 1 epoch."""
    pytest.importorskip("keras_hub")
    result = ok(script("hub_models.py", "--limit", "64", "--epochs", "1", "--batch-size", "32",
                       timeout=300))
    lines = result.stdout.splitlines()
    start = lines.index("pairs (student layer, teacher layer):")
    # Inside each task's backbone, by path; the stem and every stack, as the guide shows.
    assert lines[start + 1:start + 5] == [
        f"  ('student/student_backbone/{layer}', 'teacher/teacher_backbone/{layer}')"
        for layer in ("conv1_relu", "stack0_block0_out", "stack1_block0_out",
                      "stack2_block0_out")
    ]
    epoch = lines[lines.index("history of the student with AT:") + 1]
    values = dict(item.rsplit(" ", 1) for item in epoch.split(": ", 1)[1].split(", "))
    assert {"loss", "task_loss", "at_loss", "accuracy", "val_loss", "val_accuracy"} <= set(values)
    assert all(np.isfinite(float(v)) for v in values.values()), epoch
    assert float(values["at_loss"]) > 0
    for network in ("the teacher", "the student alone", "the student with AT"):
        line = next(x for x in lines if x.startswith(f"test accuracy of {network}: "))
        assert 0 <= float(line.rsplit(" ", 1)[1]) <= 1


@pytest.mark.slow  # a Python process
def test_hub_models_preset_says_it_needs_a_download_offline():
    """KERAS_AT_OFFLINE=1: a preset name is refused before anything downloads or trains, the
    student's as well as the teacher's (about 12 s: the imports)."""
    pytest.importorskip("keras_hub")
    result = script("hub_models.py", "--student-preset", "resnet_18_imagenet", timeout=120)
    assert result.returncode != 0
    assert ("--student-preset resnet_18_imagenet needs a download" in result.stderr
            and "KERAS_AT_OFFLINE=1" in result.stderr), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "pairs" not in result.stdout


@pytest.mark.slow  # a Python process
def test_hub_models_preset_whose_download_fails_exits_with_the_reason():
    """Downloads allowed, but through a proxy that refuses connections (the handle names no
    cached preset): the run stops at once, naming the preset and the connection error (about
    12 s: the imports)."""
    pytest.importorskip("keras_hub")
    handle = "kaggle://keras/no_such_model/keras/none/1"
    env = {key: value for key, value in ENV.items() if key != "KERAS_AT_OFFLINE"}
    env.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    result = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "hub_models.py"), "--preset", handle],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )
    assert result.returncode != 0
    assert f"--preset {handle}: the preset could not be loaded" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
