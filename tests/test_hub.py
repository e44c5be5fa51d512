"""keras-hub tasks as teacher and student (`keras_at.hub`): each network reads the images its
own preprocessor makes, as its `predict` does, or the Distiller refuses it.

Tiny random-weight `ResNetImageClassifier`s built from constructors (no presets, no downloads);
about 25 s of CPU time for the file (80 s wall on two shared, busy cores).

tests/jax has none of these: keras-hub requires tensorflow-text, hence TensorFlow, so it cannot
be installed where tests/jax run, without TensorFlow (and importing it imports TensorFlow). This
file also passes with KERAS_BACKEND=jax where both are installed (the TensorFlow-only test of
`backend.linear_map` is skipped there).
"""

from __future__ import annotations

import zipfile

import keras
import numpy as np
import pytest

import keras_at
from keras_at import backend, hub

keras_hub = pytest.importorskip("keras_hub")

# Raw pixels, larger than both converters' sizes and not square: each converter crops to its
# aspect ratio and resizes.
RAW = (20, 24, 3)


def classifier(name, image_size=(16, 16), scale=1 / 255, offset=(-0.5, -0.4, -0.3), classes=4,
               image_shape=(None, None, 3), preprocessor="converter", data_format=None):
    """A ResNet-ish keras-hub ImageClassifier (one basic block) with an image converter."""
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64],
        stackwise_num_blocks=[1], stackwise_num_strides=[1], block_type="basic_block",
        use_pre_activation=False, image_shape=image_shape, data_format=data_format,
    )
    if preprocessor == "converter":
        converter = keras_hub.layers.ResNetImageConverter(
            image_size=image_size, scale=scale, offset=offset, data_format=data_format
        )
        preprocessor = keras_hub.models.ResNetImageClassifierPreprocessor(converter)
    return keras_hub.models.ResNetImageClassifier(
        backbone, classes, preprocessor=preprocessor, name=name
    )


def raw_images(n=8, shape=RAW, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype("float32")


def labels(n=8, classes=4):
    return np.arange(n) % classes


def kd(student_logits, teacher_logits, temperature=4.0):
    return float(keras_at.kd_loss(student_logits, teacher_logits, temperature))


def test_teacher_and_student_each_read_their_own_converted_images():
    # Different converters (size, scale, offset): the teacher's logits in the step are its
    # predict's on the raw images, not those of the raw pixels or of the student's conversion.
    teacher = classifier("teacher", image_size=(16, 16))
    student = classifier("student", image_size=(12, 12), scale=1 / 127.5, offset=-1.0)
    x, y = raw_images(), labels()
    distiller = keras_at.Distiller(student, teacher, pairs=[], alpha=1.0)
    distiller.compile(optimizer="sgd")
    logs = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)

    student_logits = student.predict(x, verbose=0)
    teacher_logits = teacher.predict(x, verbose=0)
    assert logs["kd_loss"] == pytest.approx(kd(student_logits, teacher_logits), rel=1e-4)
    ignored = teacher(x, training=False)  # the raw pixels, as before the preprocessor ran
    assert kd(student_logits, ignored) != pytest.approx(logs["kd_loss"], rel=1e-2)
    students_conversion = teacher(student.preprocessor(x), training=False)
    assert kd(student_logits, students_conversion) != pytest.approx(logs["kd_loss"], rel=1e-2)


def test_wrapped_network_equals_task_predict_and_shares_its_weights():
    teacher = classifier("teacher")
    network = hub.with_preprocessor(teacher, "teacher")
    x = raw_images()
    assert network.input.shape == (None, None, None, 3)  # any raw size: the converter resizes
    np.testing.assert_allclose(network(x, training=False), teacher.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    assert {id(v) for v in network.weights} == {id(v) for v in teacher.weights}
    # A call without `training` is inference, as the task's own call is (moving statistics stay).
    before = [w.copy() for w in teacher.get_weights()]
    network(x)
    assert all(np.array_equal(a, b) for a, b in zip(before, teacher.get_weights()))
    fixed = hub.with_preprocessor(teacher, "teacher", input_shape=RAW)
    assert fixed.input.shape == (None, *RAW)


@pytest.mark.slow  # 3 epochs
def test_student_task_fits_with_kd_and_predicts_as_its_own_predict():
    teacher = classifier("teacher")
    student = classifier("student", image_size=(12, 12))
    teacher_before = [w.copy() for w in teacher.get_weights()]
    x, y = raw_images(16), labels(16)
    distiller = keras_at.Distiller(student, teacher, pairs=[], alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = distiller.fit(x, y, batch_size=8, epochs=3, verbose=0).history
    assert history["loss"][-1] < history["loss"][0], history
    assert distiller.student is student and distiller.teacher is teacher
    np.testing.assert_allclose(distiller.predict(x, verbose=0), student.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    assert all(np.array_equal(a, b) for a, b in zip(teacher_before, teacher.get_weights()))


def test_hub_teacher_with_a_plain_student_of_the_raw_image_size():
    teacher = classifier("teacher", image_size=(12, 12))
    student = keras_at.models.wide_resnet(10, 1, num_classes=4, input_shape=RAW)
    x, y = raw_images(), labels()
    distiller = keras_at.Distiller(student, teacher, pairs=[], alpha=1.0, input_shape=RAW)
    distiller.compile(optimizer="sgd")
    logs = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    expected = kd(student.predict(x, verbose=0), teacher.predict(x, verbose=0))
    assert logs["kd_loss"] == pytest.approx(expected, rel=1e-4)


class _LabelReadingPreprocessor(keras_hub.models.ResNetImageClassifierPreprocessor):
    """Its own `call`: keras_at cannot know what it does."""

    def call(self, x, y=None, sample_weight=None):
        return keras.utils.pack_x_y_sample_weight(x / 255.0, y, sample_weight)


@pytest.mark.parametrize("kind", ["own call", "plain layer", "function", "channels first"])
def test_preprocessor_that_cannot_run_in_the_step_is_refused(kind):
    if kind == "own call":
        converter = keras_hub.layers.ResNetImageConverter(image_size=(16, 16))
        preprocessor = _LabelReadingPreprocessor(converter, name="label_reader")
        expected = "'label_reader' (_LabelReadingPreprocessor)"
    elif kind == "plain layer":
        preprocessor = keras.layers.Rescaling(1 / 255, name="my_rescaling")
        expected = "'my_rescaling' (Rescaling)"
    elif kind == "function":
        def to_unit(images):
            return images / 255.0
        preprocessor = to_unit
        expected = "'to_unit' (function)"
    if kind == "channels first":
        teacher = classifier("teacher", data_format="channels_first", image_shape=(3, None, None))
        expected = "channels_first"
    else:
        teacher = classifier("teacher", preprocessor=preprocessor)
    student = classifier("student")
    with pytest.raises(ValueError, match="cannot run inside the Distiller's training step") as e:
        keras_at.Distiller(student, teacher, pairs=[], alpha=0.5)
    message = str(e.value)
    assert "teacher 'teacher'" in message and expected in message
    assert "set `task.preprocessor = None`" in message


def test_converter_that_converts_otherwise_than_resize_scale_offset_is_refused(monkeypatch):
    # As a keras-hub version whose ImageConverter did one more step would be.
    teacher = classifier("teacher")
    original = keras_hub.layers.ImageConverter._call_python
    monkeypatch.setattr(keras_hub.layers.ImageConverter, "_call_python",
                        lambda self, x: original(self, x) ** 2)
    with pytest.raises(ValueError, match="does more than resize, scale and offset"):
        hub.with_preprocessor(teacher, "teacher")


def test_models_without_a_keras_hub_preprocessor_are_left_as_they_are():
    task = classifier("task", preprocessor=None)
    plain = keras_at.models.wide_resnet(10, 1, num_classes=4, input_shape=(16, 16, 3))
    identity = classifier("identity",
                          preprocessor=keras_hub.models.ResNetImageClassifierPreprocessor())
    for model in (task, plain, identity):
        assert hub.with_preprocessor(model, "student") is model


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's resize")
def test_linear_map_is_differentiable_twice_where_tensorflows_resize_is_not():
    import tensorflow as tf

    # TensorFlow has no gradient for a bilinear resize's gradient ("not differentiable"): J_S
    # through it would lose its dependence on the weights, and gradient AT its effect, silently.
    resize = keras.layers.Resizing(5, 7)
    x = tf.constant(raw_images(2, (9, 11, 3)) / 255.0)
    w = tf.Variable(np.random.default_rng(1).normal(size=(5, 7, 3)).astype("float32"))

    def gradient_norm(apply, weights):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.sin(apply(x) * weights))
        return tf.reduce_sum(tape.gradient(loss, x) ** 2)

    def second_derivative(apply):
        with tf.GradientTape() as tape:
            value = gradient_norm(apply, w)
        return tape.gradient(value, w)

    assert second_derivative(resize) is None
    got = second_derivative(lambda images: backend.linear_map(resize, images))
    step = np.zeros(w.shape, "float32")
    step[1, 2, 0] = 1e-2
    numeric = (gradient_norm(resize, w + step) - gradient_norm(resize, w - step)) / 2e-2
    assert float(got[1, 2, 0]) == pytest.approx(float(numeric), rel=1e-2)
    np.testing.assert_array_equal(backend.linear_map(resize, x), resize(x))


@pytest.mark.slow  # ~4 s
def test_gradient_at_reaches_a_student_whose_converter_resizes():
    # One SGD step with and without the grad-AT term, from the same weights: the term changes
    # the update only if its gradient comes back through the student's resize.
    x, y = raw_images(), labels()
    updated = []
    for grad_beta in (0.0, 1e6):
        keras.utils.set_random_seed(0)
        teacher, student = classifier("teacher"), classifier("student", image_size=(12, 12))
        distiller = keras_at.Distiller(student, teacher, pairs=[], grad_beta=grad_beta)
        distiller.compile(optimizer=keras.optimizers.SGD(1e-2))
        distiller.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
        updated.append(student.get_weights())
    moved = [np.max(np.abs(a - b)) for a, b in zip(*updated)]
    assert max(moved) > 1e-6, moved


def test_distiller_with_keras_hub_tasks_saves_and_loads_the_tasks(tmp_path):
    teacher = classifier("teacher")
    student = classifier("student", image_size=(12, 12), scale=1 / 127.5, offset=-1.0)
    x = raw_images()
    distiller = keras_at.Distiller(student, teacher, pairs=[], alpha=0.5)
    distiller.compile(optimizer="sgd")

    config = distiller.get_config()
    assert config["student"]["registered_name"] == "keras_hub>ResNetImageClassifier"
    rebuilt = keras_at.Distiller.from_config(config)
    assert rebuilt.student.preprocessor.image_converter.image_size == (12, 12)

    distiller.save(tmp_path / "distiller.keras")
    loaded = keras.saving.load_model(tmp_path / "distiller.keras")
    assert isinstance(loaded.student, keras_hub.models.ResNetImageClassifier)
    assert loaded.student.preprocessor.image_converter.scale == pytest.approx(1 / 127.5)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), student.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loaded.teacher.predict(x, verbose=0),
                               teacher.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_exported_student_reads_raw_images_with_core_keras_layers(tmp_path):
    student = classifier("student", image_size=(12, 12))
    teacher = classifier("teacher")
    x = raw_images()
    path = tmp_path / "student.keras"
    exported = keras_at.export_student(keras_at.Distiller(student, teacher, pairs=[], alpha=0.5),
                                       path)
    np.testing.assert_allclose(exported.predict(x, verbose=0), student.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    config = zipfile.ZipFile(path).read("config.json").decode()
    assert "keras_hub" not in config and "keras_at" not in config
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), student.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_auto_pairs_networks_that_read_the_images_at_different_sizes():
    # The teacher's converter resizes 24x24 images to 16x16 (resolutions 8 and 4 inside it),
    # the student reads them as they are (12 and 6): no shared resolution, so pairs="auto"
    # matches them by downsampling from each network's finest, 12<->8 and 6<->4, and trains.
    teacher = classifier("teacher", image_size=(16, 16))
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="s12")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="s6")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    student = keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))
    distiller = keras_at.Distiller(student, teacher)
    teacher_levels = [t for _, t in distiller.pairs]
    assert [s for s, _ in distiller.pairs] == ["s12", "s6"]
    shapes = [distiller._taps.teacher.outputs[i + 1].shape[1:3] for i in range(2)]
    assert shapes == [(8, 8), (4, 4)], (teacher_levels, shapes)
    distiller.compile(optimizer="sgd")
    history = distiller.fit(raw_images(shape=(24, 24, 3)), labels(), batch_size=4, epochs=1,
                            verbose=0)
    assert np.isfinite(history.history["at_loss"][0]) and history.history["at_loss"][0] > 0
