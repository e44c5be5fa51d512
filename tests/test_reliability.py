"""Nothing lost on interruption, NaNs named, saving and loading, hostile inputs."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_net

import keras_at
from keras_at.callbacks import TerminateOnNaN

HERE = os.path.dirname(__file__)


def compiled(distiller):
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), metrics=["accuracy"])
    return distiller


def worker(tmp_path, name, backup, *kill):
    out = str(tmp_path / name)
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "resume_worker.py"), str(backup), out, "4",
         *map(str, kill)],
        capture_output=True, text=True, timeout=300,
    )
    return proc, out


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(tmp_path):
    import json

    proc, straight = worker(tmp_path, "straight", tmp_path / "backup_a")
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc, _ = worker(tmp_path, "killed", tmp_path / "backup_b", 2, 1)
    assert proc.returncode == -9  # SIGKILL in the middle of epoch 2
    proc, resumed = worker(tmp_path, "resumed", tmp_path / "backup_b")
    assert proc.returncode == 0, proc.stderr[-2000:]

    full = json.load(open(straight + ".json"))
    rest = json.load(open(resumed + ".json"))
    assert full["epochs"] == [0, 1, 2, 3] and rest["epochs"] == [2, 3]
    # The schedule's values and the losses of the resumed epochs are the uninterrupted run's.
    assert rest["history"]["beta"] == pytest.approx(full["history"]["beta"][2:])
    assert rest["history"]["loss"] == pytest.approx(full["history"]["loss"][2:], rel=1e-5)
    a, b = np.load(straight + ".npz"), np.load(resumed + ".npz")
    for key in a.files:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6)


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
    loaded.fit(x, y, batch_size=32, epochs=1, verbose=0)


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
    "shape, message",
    [((8, 16, 16), "rank"), ((8, 16, 16, 1), "channel"), ((8, 32, 32, 3), "image size")],
)
def test_images_that_do_not_fit_are_refused_by_name(tiny_pair, shape, message):
    distiller = compiled(keras_at.Distiller(*tiny_pair))
    x = np.zeros(shape, "float32")
    with pytest.raises(ValueError, match=rf"{message}.*|expects \(16, 16, 3\)"):
        distiller.fit(x, np.zeros(8, "int64"), verbose=0)


def test_labels_out_of_range_are_refused_with_a_message(tiny_pair, tiny_data):
    x, _ = tiny_data
    distiller = compiled(keras_at.Distiller(*tiny_pair, alpha=0.9))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Labels must be in \[0, 5\)"):
        distiller.fit(x[:8], np.full(8, 7), verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Labels must be in \[0, 5\)"):
        distiller.evaluate(x[:8], np.full(8, -1), verbose=0)


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
