"""Loss-weight schedules and backups in real `fit` runs; attention maps read from TensorBoard."""

import glob
import io
import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import AtBatch, tiny_net
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

import keras_at
from keras_at.callbacks import AttentionMapLogger, BackupAndRestore, BetaDecay, BetaScheduler
from keras_at.callbacks.backup_and_restore import POSITION_KEY
from keras_at.visualize import GRID_COLUMNS, pair_maps, title_height


def distiller(channels=3, **weights):
    model = keras_at.Distiller(
        tiny_net(2, "student", channels=channels),
        tiny_net(4, "teacher", channels=channels),
        **weights,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=False)
    return model


def data(n=16, channels=3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 16, 16, channels)).astype("float32")
    return x, rng.integers(0, 5, size=n)


class Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


class Record(keras.callbacks.Callback):
    """Records logged weights by epoch; placed after the schedulers."""

    def __init__(self, names):
        super().__init__()
        self.names, self.values = names, {}

    def on_epoch_end(self, epoch, logs=None):
        self.values[epoch] = tuple(logs[name] for name in self.names)


# === BetaScheduler / BetaDecay in fit ===
def test_scheduled_beta_is_logged_and_zero_removes_the_at_term():
    model = distiller(beta=1e3)
    x, y = data()
    schedule = BetaScheduler(lambda epoch, beta: 500.0 if epoch == 0 else 0.0)
    history = model.fit(x, y, batch_size=8, epochs=3, callbacks=[schedule], verbose=0).history
    assert history["beta"] == [500.0, 0.0, 0.0]
    assert model.beta == 0.0
    # The AT term is still measured, but from epoch 1 on it adds nothing to the total.
    assert all(value > 0 for value in history["at_loss"])
    assert history["loss"][0] > history["task_loss"][0] * 1.01
    for epoch in (1, 2):
        assert history["loss"][epoch] == pytest.approx(history["task_loss"][epoch], rel=1e-6)


def test_scheduling_a_term_on_adds_it_from_that_epoch():
    model = distiller(beta=0.0)
    x, y = data(8)
    schedule = BetaScheduler(lambda epoch, beta: 0.0 if epoch == 0 else 1e3)
    history = model.fit(x, y, batch_size=8, epochs=2, callbacks=[schedule], verbose=0).history
    assert history["beta"] == [0.0, 1e3]
    assert history["loss"][0] == pytest.approx(history["task_loss"][0], rel=1e-6)
    assert history["loss"][1] > history["task_loss"][1] + 1.0


def test_beta_decay_and_scheduling_another_weight():
    model = distiller(beta=1e3, alpha=0.5)
    x, y = data(8)
    callbacks = [
        BetaDecay(factor=0.5, epochs=(3, 1)),
        BetaScheduler(lambda epoch, alpha: 0.1 * epoch, weight="alpha"),
    ]
    history = model.fit(x, y, batch_size=8, epochs=4, callbacks=callbacks, verbose=0).history
    assert history["beta"] == [1e3, 500.0, 500.0, 250.0]
    assert history["alpha"] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert "kd_loss" in history


def resume_callbacks():
    """A value-dependent (cumulative) schedule on beta and a step decay on alpha."""
    return [
        BetaScheduler(lambda epoch, beta: beta * 0.5 if epoch in (1, 2) else beta + 1.0),
        BetaDecay(factor=0.5, epochs=(1, 3), weight="alpha"),
    ]


def uninterrupted(fit, names):
    """The values of `names` in each epoch of a run of `resume_callbacks` never interrupted."""
    reference = Record(names)
    distiller(beta=1e3, alpha=0.5).fit(**fit, callbacks=[*resume_callbacks(), reference])
    return reference


def test_resuming_restores_the_scheduled_values_not_the_constructors(tmp_path):
    x, y = data(8)
    fit = dict(x=x, y=y, batch_size=8, epochs=4, verbose=0)
    names = ("beta", "alpha")

    reference = uninterrupted(fit, names)
    assert reference.values[3] == pytest.approx((251.25, 0.125))

    # BackupAndRestore: interrupted at the start of epoch 2, resumed with fresh callbacks
    # (as a new process would be), on a freshly built model.
    backup = str(tmp_path / "backup")
    first, second = Record(names), Record(names)
    with pytest.raises(RuntimeError, match="interrupted"):
        distiller(beta=1e3, alpha=0.5).fit(
            **fit,
            callbacks=[
                keras.callbacks.BackupAndRestore(backup), *resume_callbacks(), first, Interrupt(2)
            ],
        )
    distiller(beta=1e3, alpha=0.5).fit(
        **fit, callbacks=[keras.callbacks.BackupAndRestore(backup), *resume_callbacks(), second]
    )
    assert sorted(first.values) == [0, 1] and sorted(second.values) == [2, 3]
    assert {**first.values, **second.values} == reference.values

    # initial_epoch: the same model trained on in a second fit call.
    model = distiller(beta=1e3, alpha=0.5)
    first, second = Record(names), Record(names)
    model.fit(**{**fit, "epochs": 2}, callbacks=[*resume_callbacks(), first])
    model.fit(**fit, initial_epoch=2, callbacks=[*resume_callbacks(), second])
    assert {**first.values, **second.values} == reference.values


def save_and_stop(path):
    """An `AtBatch` action: saves the weights, then stops the run as a kill would."""

    def action(model):
        model.save_weights(path)
        raise RuntimeError("interrupted")

    return action


@pytest.mark.slow  # 4 runs of 4 epochs
def test_resuming_a_mid_epoch_checkpoint_applies_that_epochs_schedule_once(tmp_path):
    # The weights saved mid-epoch 2 hold beta and alpha as epoch 2's schedules set them; the
    # resumed run begins epoch 2 again (as BackupAndRestore(save_freq=N) does).
    x, y = data(16)
    fit = dict(x=x, y=y, batch_size=8, epochs=4, verbose=0)
    names = ("beta", "alpha")
    reference = uninterrupted(fit, names)
    path = str(tmp_path / "mid.weights.h5")
    with pytest.raises(RuntimeError, match="interrupted"):
        distiller(beta=1e3, alpha=0.5).fit(
            **fit, callbacks=[*resume_callbacks(), AtBatch(2, 0, save_and_stop(path))]
        )
    resumed, second = distiller(beta=1e3, alpha=0.5), Record(names)
    resumed.load_weights(path)
    resumed.fit(**fit, initial_epoch=2, callbacks=[*resume_callbacks(), second])
    assert second.values == {2: reference.values[2], 3: reference.values[3]}
    # A value assigned by hand since is taken as it is: the schedule applies again.
    model = distiller(beta=1e3)
    model.load_weights(path)
    model.beta = 100.0
    model.fit(**{**fit, "epochs": 3}, initial_epoch=2, callbacks=resume_callbacks()[:1])
    assert model.beta == 50.0


# === Validation and config ===
def test_unknown_weight_name_is_a_value_error_listing_the_valid_ones():
    with pytest.raises(ValueError, match=r"'gamma'.*'beta'.*'input_grad_penalty'"):
        BetaScheduler(lambda epoch, value: value, weight="gamma")
    with pytest.raises(ValueError, match="'betta'"):
        BetaDecay(weight="betta")
    with pytest.raises(ValueError, match="schedule"):
        BetaScheduler(0.5)


def test_scheduling_a_model_that_is_not_a_distiller_fails_at_train_begin():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    schedule = BetaScheduler(lambda epoch, value: value, weight="grad_beta")
    with pytest.raises(ValueError, match=r"Distiller.*'grad_beta'.*Sequential"):
        model.fit(np.zeros((4, 4)), np.zeros((4, 1)), callbacks=[schedule], verbose=0)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "high", None])
def test_schedule_returning_a_bad_value_names_weight_epoch_and_value(bad):
    schedule = BetaScheduler(lambda epoch, value: bad, weight="hint_beta")
    schedule.set_model(distiller())
    with pytest.raises(ValueError, match=rf"`hint_beta`.*{bad!r}.*epoch 3"):
        schedule.on_epoch_begin(3)


def test_schedule_error_from_the_distiller_names_the_epoch():
    schedule = BetaScheduler(lambda epoch, value: 2.0, weight="alpha")
    schedule.set_model(distiller())
    with pytest.raises(ValueError, match=r"`alpha` at epoch 5.*\[0, 1\]"):
        schedule.on_epoch_begin(5)


@pytest.mark.parametrize(
    "kwargs",
    [{"factor": -0.1}, {"factor": math.nan}, {"epochs": (1, -2)}, {"epochs": (2, 2)},
     {"epochs": (1.5,)}, {"initial_value": -1.0}],
)
def test_beta_decay_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        BetaDecay(**kwargs)


def test_beta_decay_is_a_pure_function_of_the_epoch():
    decay = BetaDecay(factor=0.2, epochs=(60, 120, 160))
    model = distiller(beta=1e3)
    decay.set_model(model)
    values = {}
    for epoch in (0, 59, 60, 119, 120, 160, 199, 60, 0):
        decay.on_epoch_begin(epoch)
        values[epoch] = model.beta
    assert values == pytest.approx({0: 1e3, 59: 1e3, 60: 200, 119: 200, 120: 40, 160: 8, 199: 8})
    # A resumed run's first epoch divides out the decay already applied to the restored value.
    resumed = BetaDecay(factor=0.2, epochs=(60, 120, 160))
    resumed.set_model(model)
    model.beta = 200.0
    resumed.on_epoch_begin(120)
    assert model.beta == pytest.approx(40.0)
    fixed = BetaDecay(factor=0.0, epochs=(2,), initial_value=7.0)
    fixed.set_model(model)
    fixed.on_epoch_begin(1)
    assert model.beta == 7.0


@keras.saving.register_keras_serializable(package="keras_at_tests")
def halve_at_ten(epoch, beta):
    return beta / 2 if epoch == 10 else beta


def test_callbacks_round_trip_through_keras_serialization():
    decay = BetaDecay(0.1, (5, 9), weight="grad_beta", initial_value=2.0)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(decay))
    assert type(restored) is BetaDecay and restored.get_config() == decay.get_config()
    schedule = BetaScheduler(halve_at_ten, weight="alpha", verbose=1)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert restored.schedule is halve_at_ten and restored.weight == "alpha"
    logger = AttentionMapLogger("logs", np.zeros((2, 8, 8, 1)), every_n_epochs=3)
    assert AttentionMapLogger.from_config(logger.get_config()).get_config() == logger.get_config()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"every_n_epochs": 0}, "every_n_epochs"),
        ({"every_n_epochs": 1.5}, "every_n_epochs"),
        ({"max_images": 0}, "max_images"),
        ({"images": np.zeros((16, 16, 3))}, "images"),
        ({"images": np.zeros((2, 16, 16, 2))}, "images"),
    ],
)
def test_attention_map_logger_rejects_bad_arguments(kwargs, message):
    kwargs = {"log_dir": "logs", "images": np.zeros((2, 16, 16, 3)), **kwargs}
    with pytest.raises(ValueError, match=message):
        AttentionMapLogger(**kwargs)


# === AttentionMapLogger, read back with TensorBoard's EventAccumulator ===
def read_events(directory):
    files = glob.glob(os.path.join(directory, "events.out.tfevents.*"))
    assert files, f"no event file in {directory}"
    accumulators = []
    for path in files:
        acc = event_accumulator.EventAccumulator(
            path, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.IMAGES: 0}
        )
        accumulators.append(acc.Reload())
    return accumulators


def tensor_tags(accumulators):
    return {tag for acc in accumulators for tag in acc.Tags()["tensors"]}


def tensor_events(accumulators, tag):
    return [e for acc in accumulators if tag in acc.Tags()["tensors"] for e in acc.Tensors(tag)]


def decode_images(event):
    """TF2 image summaries are string tensors: [width, height, png, png, ...]."""
    width, height, *pngs = tf.make_ndarray(event.tensor_proto)
    images = [np.asarray(Image.open(io.BytesIO(png))) for png in pngs]
    return int(width), int(height), images


def grid_tile(grid, row, column, tile, scale, gap=2):
    """The tile at (row, column) of a `pair_grid` picture, shrunk back by its `scale`."""
    top, left = title_height(tile) + gap + row * (tile + gap), column * (tile + gap)
    return grid[top:top + tile:scale, left:left + tile:scale, :3]


def test_attention_maps_are_written_next_to_keras_tensorboard(tmp_path):
    log_dir = str(tmp_path / "logs")
    x, y = data(16)
    model = distiller()
    logger = AttentionMapLogger(log_dir, x[:6], max_images=4)
    callbacks = [keras.callbacks.TensorBoard(log_dir), logger]
    model.fit(x, y, batch_size=8, epochs=2, callbacks=callbacks, verbose=0)

    assert "epoch_loss" in tensor_tags(read_events(os.path.join(log_dir, "train")))
    events = read_events(os.path.join(log_dir, "attention"))
    # One picture per pair (and its distance): 2, not 2 pairs x 3 kinds x 4 examples.
    expected = {f"attention/{pair}{kind}" for pair in ("group0", "group1")
                for kind in ("", "/distance")}
    assert tensor_tags(events) == expected

    # 16x16 inputs: tiles enlarged 6x to 96 pixels, 2 white pixels between them.
    tile, scale = 96, 6
    final_maps = model.attention_maps(x[:4])
    for pair in ("group0", "group1"):
        logged = tensor_events(events, f"attention/{pair}")
        assert [e.step for e in logged] == [0, 1]
        for event in logged:
            width, height, images = decode_images(event)
            assert len(images) == 1
            assert (height, width) == (title_height(tile) + 2 + 4 * tile + 3 * 2,
                                       len(GRID_COLUMNS) * tile + 3 * 2)
            assert images[0].shape[:2] == (height, width)
        # The last grid's tiles are the image and the pair's maps with the final weights.
        pictures = pair_maps(x[:4], *final_maps[pair])
        for row in range(4):
            for column, kind in enumerate(GRID_COLUMNS):
                got = grid_tile(images[0], row, column, tile, scale).astype(float)
                np.testing.assert_allclose(got, np.round(pictures[kind][row] * 255), atol=1,
                                           err_msg=f"{pair} row {row} {kind}")
        assert np.abs(pictures["overlay"] - pictures["image"]).mean() * 255 > 10
        assert np.abs(pictures["teacher"] - pictures["student"]).mean() > 0

        # The distance is the pair's at_loss on the logged batch, with the final weights.
        distances = tensor_events(events, f"attention/{pair}/distance")
        assert [e.step for e in distances] == [0, 1]
        values = [float(tf.make_ndarray(e.tensor_proto)) for e in distances]
        assert all(math.isfinite(v) and v > 0 for v in values)
        taps = [keras.Model(m.input, m.get_layer(pair).output) for m in (model.student,
                                                                         model.teacher)]
        expected_loss = keras_at.at_loss(*(tap(x[:4]) for tap in taps))
        assert values[-1] == pytest.approx(float(expected_loss), rel=1e-4)


def test_every_n_epochs_on_grayscale_images(tmp_path):
    x, y = data(8, channels=1)
    model = distiller(channels=1)
    logger = AttentionMapLogger(str(tmp_path), x, every_n_epochs=2, max_images=3)
    model.fit(x, y, batch_size=8, epochs=3, callbacks=[logger], verbose=0)
    events = read_events(str(tmp_path / "attention"))
    grids = tensor_events(events, "attention/group1")
    assert [e.step for e in grids] == [0, 2]
    width, height, images = decode_images(grids[-1])
    assert (height, width) == (title_height(96) + 2 + 3 * 96 + 2 * 2, 4 * 96 + 3 * 2)
    assert len(images) == 1
    # The gray input is gray in its column and tinted by the colour map in the overlay.
    image = grid_tile(images[0], 0, 0, 96, 6).astype(int)
    overlaid = grid_tile(images[0], 0, 3, 96, 6).astype(int)
    assert np.ptp(image, axis=-1).max() == 0 and np.ptp(overlaid, axis=-1).max() > 0


def test_logger_needs_a_distiller_with_pairs(tmp_path):
    model = keras_at.Distiller(tiny_net(2, "s"), tiny_net(4, "t"), pairs=[], alpha=0.5)
    model.compile(optimizer="sgd")
    x, y = data(8)
    with pytest.raises(ValueError, match="pairs"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[AttentionMapLogger(str(tmp_path), x)])


# === keras_at's BackupAndRestore: resuming with another batch size or other data ===
def stop(model):
    raise RuntimeError("interrupted")


def seeded_distiller():
    keras.utils.set_random_seed(0)  # every run starts from the same weights
    return distiller(beta=10.0)


def backed_up_run(backup, x, y, batch_size, interrupt_after=None):
    """Two epochs of `seeded_distiller` under keras_at's BackupAndRestore (a backup every batch;
    none when `backup` is None), interrupted after batch `interrupt_after = (epoch, batch)`."""
    model = seeded_distiller()
    callbacks = [] if backup is None else [BackupAndRestore(backup, save_freq=1)]
    if interrupt_after:
        callbacks.append(AtBatch(*interrupt_after, stop))
    try:
        model.fit(x, y, batch_size=batch_size, epochs=2, shuffle=False, verbose=0,
                  callbacks=callbacks)
    except RuntimeError as error:
        assert interrupt_after and str(error) == "interrupted"
    return model


def assert_same_weights(a, b):
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)


@pytest.fixture
def interrupted(tmp_path):
    """96 examples in batches of 24, interrupted after batch 2 of epoch 1 (72 examples)."""
    x, y = data(96)
    backup = str(tmp_path / "backup")
    backed_up_run(backup, x, y, 24, interrupt_after=(1, 2))
    return backup, x, y


@pytest.mark.slow  # ~5 s: three runs
def test_a_resume_with_a_smaller_batch_size_starts_after_the_same_examples(interrupted):
    backup, x, y = interrupted
    with pytest.warns(UserWarning, match=r"after 3 batches of 24 \(72 examples\) of epoch 1 .*"
                                         r"4 steps an epoch.*batches hold 12 examples \(8 steps "
                                         r"an epoch\): it resumes after 6 of them"):
        resumed = backed_up_run(backup, x, y, 12)
    # The same training, without a backup: epoch 0 and 72 examples of epoch 1 in batches of
    # 24, then the other 24 examples of epoch 1 in batches of 12.
    reference = seeded_distiller()
    for start, stop_at, size in ((0, 96, 24), (0, 72, 24), (72, 96, 12)):
        reference.fit(x[start:stop_at], y[start:stop_at], batch_size=size, shuffle=False,
                      verbose=0)
    assert_same_weights(resumed, reference)


@pytest.mark.parametrize("batch_size, examples, message", [
    (48, 96, r"after 3 batches of 24 \(72 examples\) of epoch 1 \(counted from 0\), 4 steps an "
             r"epoch, 73 to 96 examples, but this run has batches of 48 examples, and 72 is not a "
             r"whole number of them. Rerun with batch_size=24"),
    (24, 48, r"4 steps an epoch, 73 to 96 examples, but this run has 2 steps of 24 examples an "
             r"epoch, 25 to 48 examples: its data changed"),
])
def test_a_resume_that_cannot_start_where_the_backup_stopped_is_refused(
        interrupted, batch_size, examples, message):
    backup, x, y = interrupted
    weights = os.path.join(backup, "latest.weights.h5")
    with open(weights, "rb") as f:
        saved = f.read()
    model = seeded_distiller()
    callbacks = [BackupAndRestore(backup, save_freq=1)]
    with pytest.raises(ValueError, match=f"cannot resume exactly from .*{message}"):
        model.fit(x[:examples], y[:examples], batch_size=batch_size, epochs=2, shuffle=False,
                  verbose=0, callbacks=callbacks)
    with open(weights, "rb") as f:
        assert f.read() == saved  # refused before a step trained or a backup was written
    # The model's own step is back.
    assert getattr(model.train_function, "__func__", None) is not BackupAndRestore._skip_step


@pytest.mark.slow  # three runs
def test_a_backup_from_before_the_position_was_in_its_weights_still_resumes(interrupted):
    # Such a backup held its position in training_metadata.json alone.
    import h5py

    backup, x, y = interrupted
    with h5py.File(os.path.join(backup, "latest.weights.h5"), "a") as f:
        del f.attrs[POSITION_KEY]
    with open(os.path.join(backup, "training_metadata.json")) as f:
        assert json.load(f) == {"epoch": 1, "batch": 2}
    assert_same_weights(backed_up_run(backup, x, y, 24), backed_up_run(None, x, y, 24))
