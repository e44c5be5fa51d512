"""`keras_at.export_student`: a student that loads and serves where keras_at is not installed.

Every model family is exported once (module fixture); one subprocess, in which `import
keras_at` is shown to fail, loads every file with `safe_mode=True` and predicts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_at
from keras_at.models import BatchNorm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (32, 32, 3)


def _random_statistics(model):
    """Moving statistics and BN affine weights away from their initial 0/1, per channel."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _random_statistics(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            for weight, low, high in ((layer.gamma, 0.5, 1.5), (layer.beta, -0.5, 0.5),
                                      (layer.moving_mean, -0.5, 0.5),
                                      (layer.moving_variance, 0.5, 2.0)):
                weight.assign(rng.uniform(low, high, weight.shape).astype("float32"))
    return model


def _user_model():
    """A user's own functional model: no keras_at layer."""
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name="user")


def _nested_model():
    """A user's functional model holding keras-at's WRN as a nested model."""
    inputs = keras.Input(SHAPE)
    x = keras.layers.Rescaling(0.5)(inputs)
    wrn = keras_at.models.wide_resnet(10, 1, input_shape=SHAPE, name="inner_wrn")
    return keras.Model(inputs, keras.layers.Softmax()(wrn(x)), name="nested")


MODELS = {
    "wrn": lambda: keras_at.models.wide_resnet(10, 1, input_shape=SHAPE, weight_decay=5e-4),
    "nin": lambda: keras_at.models.nin("thin", input_shape=SHAPE),
    "resnet18_keras_cv": lambda: keras_at.models.resnet(18, 10, SHAPE),
    "resnet18_keras_hub": lambda: keras_at.models.resnet(18, 10, SHAPE, backbone="keras_hub"),
    "user": _user_model,
    "nested": _nested_model,
}


def _batch_norms(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _batch_norms(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            yield layer


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{name: (original, exported model, path)} and the shared input batch."""
    folder = tmp_path_factory.mktemp("export")
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(4, *SHAPE)).astype("float32")
    models = {}
    for name, make in MODELS.items():
        original = _random_statistics(make())
        path = folder / f"{name}.keras"
        models[name] = (original, keras_at.export_student(original, path), str(path))
    return models, x, folder


def test_batch_norm_becomes_keras_layer_with_same_settings_and_weights(exported):
    models, x, _ = exported
    for name, (original, core, _) in models.items():
        before, after = list(_batch_norms(original)), list(_batch_norms(core))
        assert len(before) == len(after)
        assert any(isinstance(bn, BatchNorm) for bn in before) == (name != "user")
        for old, new in zip(before, after):
            assert type(new) is keras.layers.BatchNormalization, (name, new.name)
            assert new.get_config() == old.get_config()  # epsilon, momentum, regularisers ...
            for a, b in zip(old.get_weights(), new.get_weights()):
                np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(core.predict(x, verbose=0), original.predict(x, verbose=0),
                                   atol=1e-5, rtol=0)
        # A copy: the student's own weights are not shared with the export.
        assert not {id(v) for v in core.weights} & {id(v) for v in original.weights}


def test_exported_files_load_without_keras_at(exported, tmp_path):
    """One subprocess, with keras_at unimportable, loads every file in safe mode and predicts."""
    models, x, folder = exported
    np.save(tmp_path / "x.npy", x)
    for name, (_, _, path) in models.items():
        with zipfile.ZipFile(path) as archive:
            assert "keras_at" not in archive.read("config.json").decode(), name
    loader = tmp_path / "load.py"
    loader.write_text(textwrap.dedent(f"""
        import importlib.abc, json, sys

        class Hide(importlib.abc.MetaPathFinder):  # keras_at is not installed here
            def find_spec(self, name, path=None, target=None):
                if name == "keras_at" or name.startswith("keras_at."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}")

        sys.meta_path.insert(0, Hide())
        try:
            import keras_at  # noqa: F401
            hidden = False
        except ImportError:
            hidden = True
        import keras, numpy as np
        x = np.load({str(tmp_path / "x.npy")!r})
        out = {{}}
        for name in {sorted(models)!r}:
            model = keras.saving.load_model({str(folder)!r} + f"/{{name}}.keras", safe_mode=True)
            out[name] = model.predict(x, verbose=0).tolist()
        print(json.dumps({{"hidden": hidden, "loaded": "keras_at" in sys.modules, "out": out}}))
    """))
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in env.get("PYTHONPATH", "").split(os.pathsep)
        if p and os.path.abspath(p) != ROOT
    )
    result = subprocess.run([sys.executable, str(loader)], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["hidden"] and not report["loaded"]
    for name, (original, _, _) in models.items():
        np.testing.assert_allclose(np.array(report["out"][name]),
                                   original.predict(x, verbose=0), atol=1e-5, rtol=0,
                                   err_msg=name)


def test_serving_formats(exported, tmp_path):
    """SavedModel and TFLite (float32, dynamic-range int8) agree with the Keras model."""
    models, x, _ = exported
    _, core, _ = models["wrn"]
    expected = core.predict(x, verbose=0)
    saved = str(tmp_path / "saved_model")
    core.export(saved, verbose=False)
    reloaded = tf.saved_model.load(saved)  # kept: its variables die with it
    served = reloaded.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5, rtol=0)

    def tflite(quantize: bool):
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        interpreter = tf.lite.Interpreter(model_content=converter.convert())
        interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    np.testing.assert_allclose(tflite(False), expected, atol=1e-4, rtol=0)
    # int8 weights: within 2% of the logits' range (0.35% measured), the same predicted class.
    quantized = tflite(True)
    span = expected.max() - expected.min()
    assert np.abs(quantized - expected).max() <= 0.02 * span
    np.testing.assert_array_equal(quantized.argmax(-1), expected.argmax(-1))


def test_distiller_exports_its_student(tmp_path):
    student = _random_statistics(keras_at.models.wide_resnet(10, 1, input_shape=SHAPE))
    teacher = keras_at.models.wide_resnet(10, 2, input_shape=SHAPE)
    core = keras_at.export_student(keras_at.Distiller(student, teacher), tmp_path / "s.keras")
    assert [layer.name for layer in core.layers] == [layer.name for layer in student.layers]
    assert os.listdir(tmp_path) == ["s.keras"]  # the temporary file is gone


def test_refuses_overwrite_and_bad_input(tmp_path):
    user = _user_model()
    existing = tmp_path / "user.keras"
    existing.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="user.keras"):
        keras_at.export_student(user, existing)
    assert existing.read_bytes() == b"precious"
    keras_at.export_student(user, existing, overwrite=True)
    assert zipfile.is_zipfile(existing)
    assert os.listdir(tmp_path) == ["user.keras"]
    with pytest.raises(ValueError, match=r"\.keras"):
        keras_at.export_student(user, tmp_path / "user.h5")
    with pytest.raises(ValueError, match="Distiller or a keras.Model"):
        keras_at.export_student("model.keras", tmp_path / "x.keras")

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed"):
        keras_at.export_student(Subclassed(), tmp_path / "sub.keras")
    assert os.listdir(tmp_path) == ["user.keras"]
