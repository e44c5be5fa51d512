"""Any Keras loss, any task: names, functions and Loss instances; segmentation with
ignore_class, multi-label, regression; per-pixel KD. About 1 minute in all on 2 CPU cores."""

import functools
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras_at
from keras_at.losses import kd_loss_per_example

SCCE = keras.losses.SparseCategoricalCrossentropy


def classifier(width, name, classes=5, activation=None):
    keras.utils.set_random_seed(0)  # the same weights for the same arguments
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(width, 3, padding="same", activation="relu", name="group0")(inputs)
    x = layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", name="group1")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(classes, activation=activation, name="head")(x),
                       name=name)


def segmenter(width, name, classes=5):
    """Per-pixel logits `(B, 16, 16, classes)`."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(width, 3, padding="same", activation="relu", name="group0")(inputs)
    x = layers.Conv2D(width, 3, padding="same", activation="relu", name="group1")(x)
    return keras.Model(inputs, layers.Conv2D(classes, 1, name="pixel_logits")(x), name=name)


def images(n=16):
    return np.random.default_rng(0).normal(size=(n, 16, 16, 3)).astype("float32")


def first_step_loss(student, teacher, loss, y, **weights):
    distiller = keras_at.Distiller(student, teacher, **weights)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
    return distiller.fit(images(), y, batch_size=16, epochs=1, verbose=0).history["loss"][0]


@pytest.mark.parametrize("family", ["sparse_categorical", "mse"])
def test_a_name_a_function_and_a_loss_instance_give_the_same_first_step(family):
    """As keras.Model.compile reads them: "sparse_categorical_crossentropy" and the function
    are from_logits=False (a softmax student here), "mse" aligns (B,) targets with (B, 1)."""
    rng = np.random.default_rng(1)
    if family == "mse":
        losses = ["mse", keras.losses.mean_squared_error, keras.losses.MeanSquaredError()]
        y, classes, activation = rng.integers(0, 10, 16), 1, None
    else:
        losses = ["sparse_categorical_crossentropy", keras.losses.sparse_categorical_crossentropy,
                  SCCE()]
        y, classes, activation = rng.integers(0, 5, 16), 5, "softmax"
    values = [first_step_loss(classifier(4, "s", classes, activation),
                              classifier(8, "t", classes, activation), loss, y)
              for loss in losses]
    assert values[0] == pytest.approx(values[2], rel=1e-6)
    assert values[1] == pytest.approx(values[2], rel=1e-6)
    if family == "mse":  # (B,) targets against (B, 1) outputs, not broadcast to (B, B)
        student = classifier(4, "s", 1)
        expected = float(np.mean((student(images()).numpy()[:, 0] - y) ** 2))
        distiller = keras_at.Distiller(student, classifier(8, "t", 1), beta=0.0)
        distiller.compile(loss="mse")
        logs = distiller.evaluate(images(), y, verbose=0, return_dict=True)
        assert logs["task_loss"] == pytest.approx(expected, rel=1e-5)


def test_a_partial_with_from_logits_is_the_loss_with_from_logits():
    y = np.random.default_rng(1).integers(0, 5, 16)
    partial = functools.partial(keras.losses.sparse_categorical_crossentropy, from_logits=True)
    values = [first_step_loss(classifier(4, "s"), classifier(8, "t"), loss, y, alpha=0.5)
              for loss in (partial, None, SCCE(from_logits=True))]
    assert values[0] == pytest.approx(values[2], rel=1e-6)
    assert values[1] == pytest.approx(values[2], rel=1e-6)


def test_a_probability_loss_on_logits_warns_naming_the_output_layer():
    distiller = keras_at.Distiller(classifier(4, "s"), classifier(8, "t"))
    with pytest.warns(UserWarning, match=r"from_logits=False.*'s'.*'head'"):
        distiller.compile(loss="sparse_categorical_crossentropy")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distiller.compile(loss=SCCE(from_logits=True))
        distiller.compile(loss="mse")
        softmax = keras_at.Distiller(classifier(4, "s", activation="softmax"),
                                     classifier(8, "t", activation="softmax"))
        softmax.compile(loss="sparse_categorical_crossentropy")
    assert not [w for w in caught if "from_logits" in str(w.message)]


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy",
                                  keras.losses.sparse_categorical_crossentropy])
def test_a_distiller_compiled_with_a_name_or_function_saves_and_loads(tmp_path, loss):
    x, y = images(), np.random.default_rng(1).integers(0, 5, 16)
    distiller = keras_at.Distiller(classifier(4, "s", activation="softmax"),
                                   classifier(8, "t", activation="softmax"))
    distiller.compile(optimizer="sgd", loss=loss, metrics=["accuracy"])
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.loss == loss  # the name or function, as compiled
    before = distiller.evaluate(x, y, verbose=0, return_dict=True)
    after = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert set(after) == set(before) == {"loss", "task_loss", "at_loss", "accuracy"}
    for key in before:
        assert after[key] == pytest.approx(before[key], rel=1e-5), key


@pytest.mark.parametrize(
    "kwargs, message",
    [({"loss": ["mse", "mae"]}, "one task loss.*list"),
     ({"loss": {"head": "mse"}}, "one task loss.*dict"),
     ({"loss": 3}, "loss name, a function"),
     ({"loss": SCCE}, r"class SparseCategoricalCrossentropy; give an instance"),
     ({"loss": "no_such_loss"}, "no_such_loss"),
     ({"loss": "mse", "loss_weights": [0.5]}, "loss_weights")],
)
def test_losses_the_distiller_cannot_read_are_refused(kwargs, message):
    distiller = keras_at.Distiller(classifier(4, "s"), classifier(8, "t"))
    with pytest.raises(ValueError, match=message):
        distiller.compile(**kwargs)


def segmentation_labels(n=16, ignored=255):
    y = np.random.default_rng(2).integers(0, 5, (n, 16, 16))
    y[:, :4] = ignored  # the top rows unlabelled
    return y


@pytest.mark.slow  # ~5 s: 4 epochs of every term
def test_segmentation_with_ignore_class_trains_every_term():
    x, y = images(), segmentation_labels()
    loss = SCCE(from_logits=True, ignore_class=255)
    distiller = keras_at.Distiller(segmenter(4, "s"), segmenter(8, "t"), alpha=0.5,
                                   grad_beta=1.0, symmetry_output_beta=0.1)
    distiller.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss, metrics=["accuracy"])
    student = distiller.student
    # The task loss is Keras's own: the mean over labelled pixels, 255s left out.
    logs = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert logs["task_loss"] == pytest.approx(float(loss(y, student(x))), rel=1e-5)
    history = distiller.fit(x, y, batch_size=8, epochs=4, verbose=0).history
    assert set(history) == {"loss", "task_loss", "accuracy", "at_loss", "kd_loss",
                            "grad_at_loss", "symmetry_output_loss"}
    assert all(np.isfinite(v).all() for v in history.values())
    assert history["task_loss"][-1] < history["task_loss"][0]
    # Labels (B, H, W, 1) pass the check too (compiled again: a step traced for labels of
    # another rank is retraced for labels of unknown rank, which Keras's losses cannot read).
    distiller.compile(loss=loss)
    assert np.isfinite(distiller.evaluate(x, y[..., None], verbose=0, return_dict=True)["loss"])


def test_segmentation_labels_outside_the_classes_are_refused_naming_them():
    x, y = images(8), segmentation_labels(8)
    distiller = keras_at.Distiller(segmenter(4, "s"), segmenter(8, "t"))
    distiller.compile(loss=SCCE(from_logits=True, ignore_class=255))
    y[0, 8, 8], y[1, 9, 9] = 7, -1
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"Labels must be in \[0, 5\).*255.*got labels:\] \[7 -1\]"):
        distiller.evaluate(x, y, verbose=0)
    # Without ignore_class, 255 is no class of the student.
    distiller.compile(loss=SCCE(from_logits=True))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"got labels:\] \[255\]"):
        distiller.evaluate(x, segmentation_labels(8), verbose=0)
    with pytest.raises(ValueError, match=r"shape \(B, 16, 16\) or \(B, 16, 16, 1\).*CategoricalC"):
        distiller.evaluate(x, np.eye(5)[segmentation_labels(8, ignored=0)], verbose=0)


def test_cached_teacher_gradients_are_refused_with_ignore_class():
    distiller = keras_at.Distiller(segmenter(4, "s"), segmenter(8, "t"), grad_beta=1.0)
    distiller.compile(loss=SCCE(from_logits=True, ignore_class=255))
    with pytest.raises(ValueError, match="ignore_class=255"):
        distiller.teacher_input_gradients(images(4), segmentation_labels(4))


def test_per_pixel_kd_is_the_mean_over_pixels_then_the_weighted_batch_mean():
    x, y = images(8), segmentation_labels(8)
    weights = np.array([1, 2, 0, 1, 1, 3, 1, 1], "float32")
    distiller = keras_at.Distiller(segmenter(4, "s"), segmenter(8, "t"), pairs=[], alpha=0.5,
                                   temperature=2.0)
    distiller.compile(loss=SCCE(from_logits=True, ignore_class=255))
    logs = distiller.evaluate(x, y, sample_weight=weights, verbose=0, return_dict=True)

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    s = distiller.student(x).numpy().astype("float64") / 2.0
    t = distiller.teacher(x).numpy().astype("float64") / 2.0
    kl = 4.0 * (np.exp(log_softmax(t)) * (log_softmax(t) - log_softmax(s))).sum(-1)  # (B, H, W)
    per_example = kl.mean(axis=(1, 2))
    np.testing.assert_allclose(kd_loss_per_example(s * 2, t * 2, 2.0), per_example, rtol=1e-5)
    assert float(keras_at.kd_loss(s * 2, t * 2, 2.0)) == pytest.approx(per_example.mean(),
                                                                       rel=1e-5)
    assert logs["kd_loss"] == pytest.approx((weights * per_example).sum() / 8, rel=1e-5)


def test_kd_is_refused_on_outputs_it_cannot_compare():
    with pytest.raises(ValueError, match=r"alpha=0.5.*single unit"):
        keras_at.Distiller(classifier(4, "s", 1), classifier(8, "t", 1), alpha=0.5)
    distiller = keras_at.Distiller(classifier(4, "s", 1), classifier(8, "t", 1))
    with pytest.raises(ValueError, match=r"alpha=0.3.*single unit"):
        distiller.alpha = 0.3
    assert distiller.alpha == 0.0 and "kd_loss" not in distiller.active_terms
    with pytest.raises(ValueError, match="position by position"):
        keras_at.Distiller(segmenter(4, "s"), classifier(8, "t"), alpha=0.5)
    with pytest.raises(ValueError, match="single unit"):
        keras_at.kd_loss(np.zeros((4, 1)), np.zeros((4, 1)))


@pytest.mark.slow  # 5 epochs
def test_regression_with_integer_targets_trains_without_a_label_check():
    x = images()
    y = np.random.default_rng(3).integers(-20, 20, 16)  # no class indices of one output
    distiller = keras_at.Distiller(classifier(4, "s", 1), classifier(8, "t", 1), beta=10.0)
    distiller.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse", metrics=["mae"])
    history = distiller.fit(x, y, batch_size=8, epochs=5, verbose=0).history
    assert set(history) == {"loss", "task_loss", "at_loss", "mae"}
    assert history["task_loss"][-1] < 0.8 * history["task_loss"][0]
    distiller.compile(loss=keras.losses.MeanAbsoluteError())
    logs = distiller.evaluate(x, y.astype("float32"), verbose=0, return_dict=True)
    expected = np.mean(np.abs(distiller.student(x).numpy()[:, 0] - y))
    assert logs["task_loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow  # 5 epochs
def test_multi_label_binary_crossentropy_trains():
    x = images()
    y = (np.random.default_rng(4).random((16, 5)) < 0.4).astype("float32")  # multi-hot
    loss = keras.losses.BinaryCrossentropy(from_logits=True)
    distiller = keras_at.Distiller(classifier(4, "s"), classifier(8, "t"), hint_beta=1.0)
    distiller.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss,
                      metrics=[keras.metrics.BinaryAccuracy(threshold=0.0)])
    history = distiller.fit(x, y, batch_size=8, epochs=5, verbose=0).history
    assert set(history) == {"loss", "task_loss", "at_loss", "hint_loss", "binary_accuracy"}
    assert history["task_loss"][-1] < history["task_loss"][0]


def test_per_pixel_symmetry_output_compares_pixels_in_place():
    """A 1×1-convolution network is flip-equivariant: s(flip x) = flip(s(x)), no asymmetry."""
    inputs = keras.Input((16, 16, 3))
    hidden = layers.Conv2D(6, 1, activation="relu", name="group0")(inputs)
    student = keras.Model(inputs, layers.Conv2D(5, 1)(hidden), name="s")
    distiller = keras_at.Distiller(student, segmenter(8, "t"), pairs=[],
                                   symmetry_output_beta=1.0)
    distiller.compile(loss=SCCE(from_logits=True))
    logs = distiller.evaluate(images(8), np.zeros((8, 16, 16)), verbose=0, return_dict=True)
    assert logs["symmetry_output_loss"] == pytest.approx(0.0, abs=1e-10)
    assert logs["task_loss"] > 0.1
