"""Nothing lost on interruption, NaNs named, saving and loading, hostile inputs."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import slow_fixture, tiny_net

import keras_at
from keras_at.callbacks import TerminateOnNaN

HERE = os.path.dirname(__file__)


def compiled(distiller):
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), metrics=["accuracy"])
    return distiller


def worker(tmp_path, name, backup, *args):
    out = str(tmp_path / name)
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "resume_worker.py"), str(backup), out, "4",
         *map(str, args)],
        capture_output=True, text=True, timeout=300,
    )
    return proc, out


def results(out):
    with open(out + ".json") as f:
        run = json.load(f)
    return run["epochs"], run["history"], np.load(out + ".npz")


@slow_fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run of resume_worker.py: epochs, history, final student weights."""
    tmp_path = tmp_path_factory.mktemp("straight")
    proc, out = worker(tmp_path, "straight", tmp_path / "backup", "--keras-backup")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return results(out)


def killed_and_resumed(tmp_path, *args, kill):
    """Runs resume_worker.py until it kills itself (`kill`), then again to its end."""
    backup = tmp_path / "backup"
    proc, _ = worker(tmp_path, "killed", backup, *args, *kill)
    assert proc.returncode == -9, proc.stderr[-2000:]  # SIGKILL
    assert os.path.exists(backup / "latest.weights.h5")
    proc, out = worker(tmp_path, "resumed", backup, *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return results(out)


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(tmp_path, straight):
    full_epochs, full, full_weights = straight
    epochs, rest, weights = killed_and_resumed(tmp_path, "--keras-backup",
                                               kill=("--kill-batch", 2, 1))
    assert full_epochs == [0, 1, 2, 3] and epochs == [2, 3]
    # The schedule's values and the losses of the resumed epochs are the uninterrupted run's.
    assert rest["beta"] == pytest.approx(full["beta"][2:])
    assert rest["loss"] == pytest.approx(full["loss"][2:], rel=1e-5)
    for key in full_weights.files:
        np.testing.assert_allclose(full_weights[key], weights[key], rtol=1e-5, atol=1e-6)


def test_keras_mid_epoch_backup_applies_each_epochs_schedule_once(tmp_path, straight):
    # Keras's BackupAndRestore(save_freq=2) restores the weights saved after batch 1 of epoch 2
    # (beta and alpha already set for epoch 2) and runs on_epoch_begin(2) again.
    _, full, _ = straight
    epochs, rest, _ = killed_and_resumed(tmp_path, "--save-freq", 2, "--keras-backup",
                                         kill=("--kill-batch", 2, 2))
    assert epochs == [2, 3]
    assert full["beta"] == [1000.0, 500.0, 250.0, 125.0]
    assert rest["beta"] == full["beta"][2:]  # BetaDecay, a function of the epoch
    assert rest["alpha"] == full["alpha"][2:]  # BetaScheduler, alpha * 0.8 each epoch


def test_backup_killed_while_written_resumes_bit_exact(tmp_path, straight):
    # Killed in the middle of writing the 4th backup (save_freq=3, 4 batches an epoch: after
    # batch 3 of epoch 2): the 3rd (after batch 0 of epoch 2) must still load, and
    # keras_at's BackupAndRestore skips batch 0 when it reruns epoch 2.
    _, full, full_weights = straight
    epochs, rest, weights = killed_and_resumed(tmp_path, "--save-freq", 3,
                                               kill=("--kill-in-save", 4))
    assert epochs == [2, 3]
    assert rest["beta"] == full["beta"][2:] and rest["alpha"] == full["alpha"][2:]
    assert rest["loss"][1] == full["loss"][3]  # epoch 3, run whole in both
    for key in full_weights.files:
        np.testing.assert_array_equal(full_weights[key], weights[key])


def test_a_distiller_is_not_saved_as_legacy_h5(tmp_path, tiny_pair):
    # Keras's legacy HDF5 writer failed on it with "The truth value of an array ... ambiguous".
    with pytest.raises(ValueError, match=r"d\.h5\).*`\.keras` file.*save_weights"):
        keras_at.Distiller(*tiny_pair).save(str(tmp_path / "d.h5"))
    assert os.listdir(tmp_path) == []


def test_backup_killed_between_its_weights_and_metadata_resumes_bit_exact(tmp_path, straight):
    # Killed once the 3rd backup's weights (after batch 0 of epoch 2) are in place, before its
    # training_metadata.json: the file beside them still says batch 1 of epoch 1. The position
    # inside the weights file is the one resumed from.
    _, full, full_weights = straight
    backup = tmp_path / "backup"
    proc, _ = worker(tmp_path, "killed", backup, "--save-freq", 3, "--kill-before-metadata", 3)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert json.loads((backup / "training_metadata.json").read_text()) == {"epoch": 1, "batch": 1}
    proc, out = worker(tmp_path, "resumed", backup, "--save-freq", 3)
    assert proc.returncode == 0, proc.stderr[-2000:]
    epochs, rest, weights = results(out)
    assert epochs == [2, 3]
    assert rest["loss"][1] == full["loss"][3]
    for key in full_weights.files:
        np.testing.assert_array_equal(full_weights[key], weights[key])


def test_whole_distiller_saves_and_loads_with_safe_mode(tmp_path, tiny_data):
    x, y = tiny_data
    distiller = compiled(keras_at.Distiller(tiny_net(4, "s"), tiny_net(8, "t"), alpha=0.5,
                                            hint_beta=3.0))
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    distiller.beta = 77.0
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded, keras_at.Distiller)
    assert loaded.pairs == distiller.pairs
    assert (loaded.beta, loaded.alpha, loaded.hint_beta) == (77.0, 0.5, 3.0)
    for a, b in zip(distiller.hint_adapters, loaded.hint_adapters):
        for wa, wb in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(wa, wb)
    for wa, wb in zip(distiller.teacher.get_weights(), loaded.teacher.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    want = distiller.evaluate(x, y, verbose=0, return_dict=True)
    got = loaded.evaluate(x, y, verbose=0, return_dict=True)  # compiled on load
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-5), key
    # Training goes on from the saved optimizer state (SGD's momentum) as the original's does.
    fit = dict(x=x, y=y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    want, got = distiller.fit(**fit).history, loaded.fit(**fit).history
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-5), key
    for wa, wb in zip(distiller.student.get_weights(), loaded.student.get_weights(), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)


def test_saving_never_overwrites_silently(tmp_path, tiny_pair):
    distiller = keras_at.Distiller(*tiny_pair)
    path = tmp_path / "d.keras"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="d.keras"):
        distiller.save(str(path))
    weights = tmp_path / "d.weights.h5"
    weights.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="d.weights.h5"):
        distiller.save_weights(str(weights))
    assert path.read_bytes() == weights.read_bytes() == b"precious"
    distiller.save(str(path), overwrite=True)
    assert path.read_bytes() != b"precious"


def test_non_finite_kd_term_is_named_and_stops_training(tiny_data, capsys):
    x, y = tiny_data
    teacher = tiny_net(8, "t")
    head = teacher.get_layer("head")
    kernel, bias = head.get_weights()
    head.set_weights([kernel, np.full_like(bias, np.nan)])  # NaN logits, finite features
    distiller = compiled(keras_at.Distiller(tiny_net(4, "s"), teacher, alpha=0.5))
    history = distiller.fit(x, y, batch_size=16, epochs=3, verbose=0,
                            callbacks=[TerminateOnNaN()])
    message = capsys.readouterr().out
    assert "kd_loss=nan" in message and "at_loss" not in message
    assert len(history.epoch) == 1
    with pytest.raises(RuntimeError, match="kd_loss=nan"):
        distiller.fit(x, y, batch_size=16, epochs=1, verbose=0,
                      callbacks=[TerminateOnNaN(raise_error=True)])


def test_keras_terminate_on_nan_stops_a_distiller(tiny_data):
    x, y = tiny_data
    distiller = compiled(keras_at.Distiller(tiny_net(4, "s"), tiny_net(8, "t")))
    x = x.copy()
    x[:16] = np.nan
    history = distiller.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0,
                            callbacks=[keras.callbacks.TerminateOnNaN()])
    assert len(history.epoch) == 1


@pytest.mark.parametrize(
    "shape, given",
    [((8, 16, 16), r"\(16, 16\)"), ((8, 16, 16, 1), r"\(16, 16, 1\)"),
     ((8, 32, 32, 3), r"\(32, 32, 3\)")],
    ids=["rank", "channel", "image size"],
)
def test_images_that_do_not_fit_are_refused_by_name(tiny_pair, shape, given):
    distiller = compiled(keras_at.Distiller(*tiny_pair))
    x = np.zeros(shape, "float32")
    with pytest.raises(ValueError, match=rf"^Images of shape {given} \(batch dimension left "
                                         r"out\) do not fit the student 'student', which "
                                         r"expects \(16, 16, 3\)"):
        distiller.fit(x, np.zeros(8, "int64"), verbose=0)


def test_labels_out_of_range_are_refused_with_a_message(tiny_pair, tiny_data):
    x, _ = tiny_data
    distiller = compiled(keras_at.Distiller(*tiny_pair, alpha=0.9))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Labels must be in \[0, 5\)"):
        distiller.fit(x[:8], np.full(8, 7), verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Labels must be in \[0, 5\)"):
        distiller.evaluate(x[:8], np.full(8, -1), verbose=0)
    # The message shows the offending labels, not the first labels of the batch.
    labels = np.array([0, 1, 2, 3, 9, 4, 7, 9])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"got labels:\] \[9 7\]"):
        distiller.evaluate(x[:8], labels, verbose=0)


def test_float_labels_must_be_whole_class_indices(tiny_pair, tiny_data):
    x, y = tiny_data
    distiller = compiled(keras_at.Distiller(*tiny_pair))
    labels = np.array([0, 1.5, 2, 3, 4, 2.25, 1, 0], "float32")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"fractional labels:\] \[1.5 2.25\]"):
        distiller.fit(x[:8], labels, verbose=0)
    whole = distiller.evaluate(x[:8], y[:8].astype("float32"), verbose=0, return_dict=True)
    assert whole == distiller.evaluate(x[:8], y[:8], verbose=0, return_dict=True)


def test_image_folder_with_an_empty_or_a_single_class_warns_naming_it(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / "pets" / cls).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "pets" / "cat" / "a.png")
    (tmp_path / "pets" / "dog" / "notes.txt").write_text("no image here")
    with pytest.warns(UserWarning, match=r"no images of the classes \['dog'\]"):
        keras_at.data.load(tmp_path / "pets", batch_size=2, augment=False, image_size=8)
    (tmp_path / "pets" / "dog" / "notes.txt").unlink()
    (tmp_path / "pets" / "dog").rmdir()
    with pytest.warns(UserWarning, match="single class, 'cat'"):
        keras_at.data.load(tmp_path / "pets", batch_size=2, augment=False, image_size=8)


def test_batch_of_one_trains(tiny_pair, tiny_data):
    x, y = tiny_data
    distiller = compiled(keras_at.Distiller(*tiny_pair, alpha=0.5, grad_beta=1.0))
    history = distiller.fit(x[:3], y[:3], batch_size=1, epochs=1, verbose=0)
    assert all(np.isfinite(v[0]) for v in history.history.values())


def test_empty_dataset_is_refused(tiny_pair):
    distiller = compiled(keras_at.Distiller(*tiny_pair))
    empty = tf.data.Dataset.from_tensor_slices(
        (np.zeros((0, 16, 16, 3), "float32"), np.zeros((0,), "int64"))).batch(4)
    with pytest.raises(ValueError, match="empty"):
        distiller.fit(empty, epochs=1, verbose=0)
    unknown_size = tf.data.Dataset.from_tensor_slices(
        (np.zeros((4, 16, 16, 3), "float32"), np.zeros((4,), "int64"))
    ).filter(lambda image, label: label > 0).batch(4)
    with pytest.raises(ValueError, match="empty"):
        distiller.fit(unknown_size, epochs=1, verbose=0)


def test_at_loss_properties_over_random_inputs():
    rng = np.random.default_rng(1)
    for _ in range(40):
        b, h, w = rng.integers(1, 5), rng.integers(1, 9), rng.integers(1, 9)
        s = rng.normal(size=(b, h, w, rng.integers(1, 6))).astype("float32")
        t = rng.normal(size=(b, h, w, rng.integers(1, 6))).astype("float32")
        p = float(rng.choice([1, 2, 3, 4, 1.5]))
        reduction = str(rng.choice(["sum", "mean", "max"]))
        value = float(keras_at.at_loss(s, t, p=p, reduction=reduction))
        assert np.isfinite(value) and -1e-7 <= value <= 2 / (h * w) + 1e-6
        scaled = float(keras_at.at_loss(s * rng.uniform(0.01, 100), t * rng.uniform(0.01, 100),
                                        p=p, reduction=reduction))
        assert scaled == pytest.approx(value, rel=1e-3, abs=1e-7)
        assert float(keras_at.at_loss(s, s, p=p, reduction=reduction)) == pytest.approx(
            0.0, abs=1e-7)


# === Atomic saves and loads that say what does not fit ===
KILLED_SAVE = """
import os, shutil, signal, sys
sys.path.insert(0, sys.argv[2])
import keras_at
from conftest import tiny_net

path = sys.argv[1]
distiller = keras_at.Distiller(tiny_net(4, "s"), tiny_net(8, "t"))
distiller.save(path)
shutil.copyfile(path, path + ".good")
distiller.beta = 5.0  # the next save differs
# Killed after the student and part of the teacher are in the new file, before the rest.
distiller.teacher.get_layer("head").save_own_variables = (
    lambda store: os.kill(os.getpid(), signal.SIGKILL))
distiller.save(path, overwrite=True)
"""


@pytest.mark.slow  # Python processes
def test_a_kill_during_save_leaves_the_previous_file_and_the_next_save_cleans_up(tmp_path):
    path = tmp_path / "d.keras"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(path), HERE],
                            stderr=subprocess.PIPE, text=True)
    try:
        stderr = proc.communicate(timeout=300)[1]
    finally:
        proc.kill()  # only if it outlived the timeout
    assert proc.returncode == -9, stderr[-2000:]
    assert path.read_bytes() == (tmp_path / "d.keras.good").read_bytes()
    assert keras.models.load_model(str(path)).beta == 1e3
    # The killed save's temporary file is still there; the next save of d.keras removes it,
    # but not one whose writer still runs, nor one of another target.
    (left,) = [name for name in os.listdir(tmp_path) if name.startswith(".d.keras.")]
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        kept = [tmp_path / f".d.keras.{live.pid}-{'a' * 12}.tmp.keras",
                tmp_path / f".other.keras.{proc.pid}-{'b' * 12}.tmp.keras"]
        for name in kept:
            name.write_bytes(b"partial")
        os.utime(kept[0], (0, 0))  # old, but its writer is alive
        keras_at.Distiller(tiny_net(4, "s"), tiny_net(8, "t")).save(str(path), overwrite=True)
        live.kill()
    assert not (tmp_path / left).exists()
    assert all(name.exists() for name in kept)


def failing_save(store):
    raise RuntimeError("disk full")


def test_a_failed_save_keeps_the_target_and_leaves_no_temporary_file(tmp_path, tiny_pair):
    distiller = keras_at.Distiller(*tiny_pair)
    student = tiny_net(4, "plain")
    targets = {
        "d.keras": lambda path: distiller.save(path, overwrite=True),
        "d.weights.h5": lambda path: distiller.save_weights(path, overwrite=True),
        "student.keras": lambda path: keras_at.saving.save_atomically(student.save, path),
    }
    for name in targets:
        (tmp_path / name).write_bytes(b"precious")
    for layer in (distiller.teacher.get_layer("head"), student.get_layer("head")):
        layer.save_own_variables = failing_save
    for name, save in targets.items():
        with pytest.raises(RuntimeError, match="disk full"):
            save(str(tmp_path / name))
        assert (tmp_path / name).read_bytes() == b"precious", name
    assert sorted(os.listdir(tmp_path)) == sorted(targets)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_loaded_weights_switch_on_the_terms_they_weigh(tmp_path, tiny_data):
    x, y = tiny_data
    x, y = x[:16], y[:16]
    path = str(tmp_path / "kd.weights.h5")
    keras_at.Distiller(tiny_net(4, "s"), tiny_net(8, "t"), pairs=[], alpha=0.5).save_weights(path)
    student, teacher = tiny_net(4, "s"), tiny_net(8, "t")
    distiller = keras_at.Distiller(student, teacher, pairs=[], alpha=0.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))  # the weights stay as loaded
    assert "kd_loss" not in distiller.fit(x, y, batch_size=16, verbose=0).history  # traced
    distiller.load_weights(path)
    assert distiller.alpha == 0.5 and distiller.active_terms == ["kd_loss"]
    history = distiller.fit(x, y, batch_size=16, verbose=0).history

    # The step's loss, computed here from the networks' outputs alone.
    s = keras.ops.convert_to_numpy(student(x, training=True)).astype("float64")
    t = keras.ops.convert_to_numpy(teacher(x, training=False)).astype("float64")
    task = -np.mean(np.log(softmax(s)[np.arange(len(y)), y]))
    p_t, p_s = softmax(t / 4.0), softmax(s / 4.0)
    kd = 16.0 * np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=-1))
    assert history["kd_loss"][0] == pytest.approx(kd, rel=1e-4)
    assert history["loss"][0] == pytest.approx(0.5 * task + 0.5 * kd, rel=1e-4)


def test_loading_weights_of_other_pairs_names_both_lists(tmp_path):
    path = str(tmp_path / "two.weights.h5")
    keras_at.Distiller(tiny_net(4, "s"), tiny_net(8, "t"), hint_beta=1.0).save_weights(path)
    one = keras_at.Distiller(tiny_net(4, "s"), tiny_net(8, "t"), pairs=[("group1", "group1")])
    with pytest.raises(ValueError, match=r"saved by a Distiller with pairs \[\('group0', "
                                         r"'group0'\) with a 4->8 adapter, \('group1', 'group1'\)"
                                         r".*but this Distiller has pairs \[\('group1', 'group1'"):
        one.load_weights(path)
    # Pairs that hold no weights (no adapters) do not stop the networks' weights loading.
    same_width = keras_at.Distiller(tiny_net(4, "s"), tiny_net(4, "t"))
    same_width.save_weights(path, overwrite=True)
    other = keras_at.Distiller(tiny_net(4, "s"), tiny_net(4, "t"), pairs=[("group1", "group1")])
    other.load_weights(path)
    for a, b in zip(same_width.student.weights, other.student.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # A 0.1.0 file still loads: six loss weights, before symmetry_output_beta, the temperature
    # variable, the schedule marks and the pairs were saved.
    import h5py

    with h5py.File(path, "a") as f:
        assert sorted(f["vars"].keys()) == ["0", "1", "2", "3", "4", "5", "6", "7", "8", "pairs"]
        for key in ("pairs", "6", "7", "8"):
            del f[f"vars/{key}"]
    same_width.beta, same_width.temperature = 5.0, 2.0
    same_width.load_weights(path)
    assert same_width.beta == 1e3 and same_width.temperature == 2.0


@pytest.mark.parametrize("network, widths, suffix, hint_beta", [
    ("student", (6, 8), ".weights.h5", 1.0),  # the same pairs, other adapters
    ("teacher", (4, 12), ".keras", 0.0),
])
def test_loading_networks_of_other_widths_names_the_first_layer_that_differs(
        tmp_path, network, widths, suffix, hint_beta):
    path = str(tmp_path / f"d{suffix}")
    saved = keras_at.Distiller(tiny_net(4, "s"), tiny_net(8, "t"), hint_beta=hint_beta)
    (saved.save if suffix == ".keras" else saved.save_weights)(path)
    other = keras_at.Distiller(tiny_net(widths[0], "s"), tiny_net(widths[1], "t"),
                               hint_beta=hint_beta)
    width, now = {"student": (4, widths[0]), "teacher": (8, widths[1])}[network]
    with pytest.raises(ValueError, match=(
            rf"d{suffix} does not fit this Distiller: the first layer whose shapes differ is the "
            rf"{network}'s 'conv2d_\d+' \(saved as 'conv2d(_\d+)?'\), variable shapes saved "
            rf"\[\(3, 3, 3, {width}\), \({width},\)\], now \[\(3, 3, 3, {now}\), \({now},\)\]\."
    )) as caught:
        other.load_weights(path)
    assert "pairs" not in str(caught.value)


# === Non-finite values ===
def nan_dropping_net(name):
    """A two-group CNN like `tiny_net` whose first convolution's NaN outputs become 0, as
    oneDNN's kernels can make them: a NaN image gives finite logits and loss, but NaN kernel
    gradients, whatever TF_ENABLE_ONEDNN_OPTS says."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.Lambda(lambda t: keras.ops.where(keras.ops.isnan(t), 0.0, t))(x)
    x = keras.layers.ReLU(name="group0")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="group1")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="head")(x), name=name)


def test_a_nan_image_that_leaves_the_loss_finite_stops_training(tiny_data, capsys):
    x, y = tiny_data
    x = x.copy()
    x[20] = np.nan  # in batch 1 of 4
    fit = dict(x=x, y=y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    distiller = compiled(keras_at.Distiller(nan_dropping_net("s"), tiny_net(8, "t"), beta=0.0))
    history = distiller.fit(**fit, callbacks=[TerminateOnNaN()])
    message = capsys.readouterr().out
    assert len(history.epoch) == 1 and np.isfinite(history.history["loss"][0])
    assert "student variables are not finite at the end of epoch 0" in message
    assert "not a loss term: it came from the input batch" in message
    distiller = compiled(keras_at.Distiller(nan_dropping_net("s"), tiny_net(8, "t"), beta=0.0))
    with pytest.raises(RuntimeError, match="not finite after batch 1 of epoch 0"):
        distiller.fit(**fit, callbacks=[TerminateOnNaN(raise_error=True, check_weights_every=1)])
    with pytest.raises(ValueError, match="check_weights_every"):
        TerminateOnNaN(check_weights_every=-1)
