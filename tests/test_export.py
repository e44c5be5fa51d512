"""`keras_at.export_student`: a student that loads and serves where keras_at is not installed.

Every model family is exported once (module fixture); one subprocess, in which `import
keras_at` is shown to fail, loads every file with `safe_mode=True` and predicts. A WRN trained
under each mixed dtype policy is exported once too (module fixture): float32 by default,
served as a SavedModel and a TFLite file run by LiteRT.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import warnings
import zipfile

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from conftest import slow_fixture

import keras_at
from keras_at.export import to_core_keras
from keras_at.models import BatchNorm

try:  # TensorFlow 2.21 deprecates tf.lite.Interpreter for LiteRT's (`pip install ai-edge-litert`)
    from ai_edge_litert.interpreter import Interpreter as TFLiteInterpreter
except ImportError:  # no LiteRT wheel for this platform: TensorFlow's interpreter runs the file
    TFLiteInterpreter = tf.lite.Interpreter

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


def _hub_resnet_classifier(preprocessor=None):
    """keras-hub's ResNet image classifier, tiny (its stem needs 64 filters) and random."""
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=SHAPE,
    )
    return keras_hub.models.ResNetImageClassifier(
        backbone=backbone, num_classes=10, preprocessor=preprocessor, name="hub_classifier"
    )


MODELS = {
    "wrn": lambda: keras_at.models.wide_resnet(10, 1, input_shape=SHAPE, weight_decay=5e-4),
    "nin": lambda: keras_at.models.nin("thin", input_shape=SHAPE),
    "resnet18_keras_cv": lambda: keras_at.models.resnet(18, 10, SHAPE),
    "resnet18_keras_hub": lambda: keras_at.models.resnet(18, 10, SHAPE, backbone="keras_hub"),
    "user": _user_model,
    "nested": _nested_model,
    "hub_classifier": _hub_resnet_classifier,
}
WITHOUT_BATCH_NORM = ("user", "hub_classifier")  # core Keras BatchNormalization only, or none


def _batch_norms(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _batch_norms(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            yield layer


@slow_fixture(scope="module")  # ~10 s: every family, two ResNet-18s among them
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
        assert any(isinstance(bn, BatchNorm) for bn in before) == (name not in WITHOUT_BATCH_NORM)
        for old, new in zip(before, after):
            assert type(new) is keras.layers.BatchNormalization, (name, new.name)
            assert new.get_config() == old.get_config()  # epsilon, momentum, regularisers ...
            for a, b in zip(old.get_weights(), new.get_weights()):
                np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(core.predict(x, verbose=0), original.predict(x, verbose=0),
                                   atol=1e-5, rtol=0)
        # A copy: the student's own weights are not shared with the export.
        assert not {id(v) for v in core.weights} & {id(v) for v in original.weights}


@pytest.mark.slow  # a Python process
def test_exported_files_load_without_keras_at(exported, tmp_path):
    """One subprocess, with keras_at unimportable, loads every file in safe mode and predicts."""
    models, x, folder = exported
    np.save(tmp_path / "x.npy", x)
    for name, (_, _, path) in models.items():
        with zipfile.ZipFile(path) as archive:
            config = archive.read("config.json").decode()
            assert "keras_at" not in config and "keras_hub" not in config, name
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
        print(json.dumps({{"hidden": hidden, "loaded": "keras_at" in sys.modules,
                          "hub": "keras_hub" in sys.modules, "out": out}}))
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
    assert report["hidden"] and not report["loaded"] and not report["hub"]
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
        return _run_tflite(converter.convert(), x)

    np.testing.assert_allclose(tflite(False), expected, atol=1e-4, rtol=0)
    # int8 weights: within 2% of the logits' range (0.35% measured), the same predicted class.
    quantized = tflite(True)
    span = expected.max() - expected.min()
    assert np.abs(quantized - expected).max() <= 0.02 * span
    np.testing.assert_array_equal(quantized.argmax(-1), expected.argmax(-1))


def _run_tflite(content: bytes, x: np.ndarray) -> np.ndarray:
    """The TFLite model's output for the batch `x`, run by LiteRT's interpreter."""
    interpreter = TFLiteInterpreter(model_content=content)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


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


# === to_core_keras ===


def test_to_core_keras_copies_a_sequential_model():
    model = keras.Sequential([
        keras.Input(SHAPE), keras.layers.Conv2D(4, 3), BatchNorm(name="bn"),
        keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10),
    ], name="sequential_student")
    _random_statistics(model)
    copy = to_core_keras(model)
    assert isinstance(copy, keras.Sequential) and copy.name == model.name
    assert [type(layer).__name__ for layer in copy.layers] == [
        "Conv2D", "BatchNormalization", "ReLU", "GlobalAveragePooling2D", "Dense"]
    assert copy.get_layer("bn").get_config() == model.get_layer("bn").get_config()
    x = np.random.default_rng(0).normal(size=(4, *SHAPE)).astype("float32")
    np.testing.assert_allclose(copy.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5, rtol=0)
    assert not {id(v) for v in copy.weights} & {id(v) for v in model.weights}


def test_to_core_keras_refuses_a_keras_at_layer_it_cannot_replace():
    class Gate(keras.layers.Layer):
        def call(self, x):
            return x * keras.ops.sigmoid(x)

    # Stands for a keras_at layer that has no core Keras replacement written for it: copied
    # as itself, the file would need keras_at again.
    Gate.__module__ = "keras_at.models.gate"
    inputs = keras.Input(SHAPE)
    x = Gate(name="gate")(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)), name="gated")
    with pytest.raises(ValueError, match=r"'gated' holds keras_at layers without a core Keras "
                                         r"equivalent: gate \(Gate\)"):
        to_core_keras(model)
    with pytest.raises(ValueError, match="`dtype_policy` must be \"float32\""):
        to_core_keras(_user_model(), dtype_policy="mixed_bfloat16")


# === Mixed precision ===


@contextlib.contextmanager
def global_policy(name):
    """Keras's global dtype policy set to `name` inside the block, the previous one after it."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def test_to_core_keras_casts_half_precision_weights_and_keeps_quantized_layers():
    with global_policy("bfloat16"):  # bfloat16 variables, not a mixed policy's float32 ones
        half = _user_model()
    copy = to_core_keras(half)
    assert {v.dtype for v in half.weights} == {"bfloat16"}
    assert {v.dtype for v in copy.weights} == {"float32"} and copy.output.dtype == "float32"
    for a, b in zip(half.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(a.astype("float32"), b)
    quantized = _user_model()
    quantized.layers[-1].quantize("int8")
    copy = to_core_keras(quantized)
    assert copy.layers[-1].dtype_policy.name == quantized.layers[-1].dtype_policy.name
    x = np.random.default_rng(0).normal(size=(4, *SHAPE)).astype("float32")
    np.testing.assert_allclose(copy.predict(x, verbose=0), quantized.predict(x, verbose=0),
                               atol=1e-5, rtol=0)


FAMILIES = {
    "wrn": lambda: keras_at.models.wide_resnet(10, 1, input_shape=SHAPE),
    "nin": lambda: keras_at.models.nin("thin", input_shape=SHAPE),
    "nin_nobn": lambda: keras_at.models.nin("thin", input_shape=SHAPE, batch_norm=False),
    "resnet18_keras_cv": lambda: keras_at.models.resnet(18, 10, SHAPE),
    "resnet18_keras_hub": lambda: keras_at.models.resnet(18, 10, SHAPE, backbone="keras_hub"),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_models_return_float32_logits_under_a_mixed_policy(family):
    """Only the dtype of the classifier changes: names, parameters and groups stay (compared
    with the model built under the usual policy, but for the slow-to-build ResNets)."""
    with global_policy("mixed_bfloat16"):
        mixed = FAMILIES[family]()
    assert mixed.output.dtype == "float32"
    assert mixed.output._keras_history[0].name == "logits"
    assert mixed.get_layer("group1").output.dtype == "bfloat16"
    if not family.startswith("resnet"):
        usual = FAMILIES[family]()
        assert [layer.name for layer in mixed.layers] == [layer.name for layer in usual.layers]
        assert mixed.count_params() == usual.count_params()


@pytest.fixture(scope="module", params=[
    "mixed_bfloat16", pytest.param("mixed_float16", marks=pytest.mark.slow)])  # ~8 s more
def mixed(request, tmp_path_factory):
    """A WRN-10-1 student trained 2 steps under a mixed policy, exported float32 and as is."""
    folder = tmp_path_factory.mktemp(request.param)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 16, 16, 3)).astype("float32")
    with global_policy(request.param):
        keras.utils.set_random_seed(0)
        student = keras_at.models.wide_resnet(10, 1, input_shape=(16, 16, 3))
        teacher = keras_at.models.wide_resnet(10, 1, input_shape=(16, 16, 3), name="teacher")
        distiller = keras_at.Distiller(student, teacher, alpha=0.5)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.
                          SparseCategoricalCrossentropy(from_logits=True))
        history = distiller.fit(x, np.arange(8) % 10, batch_size=4, epochs=1, verbose=0)
        logits = student.predict(x, verbose=0)
        exported = keras_at.export_student(distiller, folder / "student.keras")
        kept = keras_at.export_student(distiller, folder / "kept.keras", dtype_policy=None)
    return {"policy": request.param, "x": x, "distiller": distiller, "history": history,
            "logits": logits, "exported": exported, "kept": kept, "folder": folder}


def _close_to_half_precision(actual, logits):
    # Half-precision round-off: within 1% of the logits' range (a WRN-10-1 at 3 seeds:
    # bfloat16 0.13-0.17%, float16 0.02-0.04%).
    assert np.abs(actual - logits).max() <= 0.01 * (logits.max() - logits.min())


def test_mixed_student_trains_with_float32_logits(mixed):
    distiller, policy = mixed["distiller"], mixed["policy"]
    assert np.isfinite(mixed["history"].history["loss"]).all()
    assert distiller.student.get_layer("group0").compute_dtype == policy.split("_")[1]
    assert mixed["logits"].dtype == np.float32
    assert distiller.pairs == [(f"group{g}", f"group{g}") for g in range(3)]


def test_mixed_student_exports_float32(mixed):
    exported, student = mixed["exported"], mixed["distiller"].student
    # An InputLayer's policy is the global one: its config holds only the input's dtype.
    policies = {layer.dtype_policy.name for layer in exported.layers
                if not isinstance(layer, keras.layers.InputLayer)}
    assert policies == {"float32"}, policies
    assert {v.dtype for v in exported.weights} == {"float32"}
    outputs = exported.predict(mixed["x"], verbose=0)
    assert outputs.dtype == np.float32
    _close_to_half_precision(outputs, mixed["logits"])
    for a, b in zip(student.get_weights(), exported.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # a mixed policy's variables are float32 already
    loaded = keras.saving.load_model(mixed["folder"] / "student.keras")  # the previous policy
    assert {layer.dtype_policy.name for layer in loaded.layers
            if not isinstance(layer, keras.layers.InputLayer)} == {"float32"}
    np.testing.assert_allclose(loaded.predict(mixed["x"], verbose=0), outputs, atol=1e-6,
                               rtol=0)


@pytest.mark.slow  # a SavedModel and its TFLite conversion
def test_float32_export_serves_and_runs_in_litert(mixed, tmp_path):
    exported, x = mixed["exported"], mixed["x"]
    expected = exported.predict(x, verbose=0)
    saved = str(tmp_path / "saved_model")
    exported.export(saved, verbose=False)
    reloaded = tf.saved_model.load(saved)
    served = reloaded.serve(tf.constant(x))
    assert served.dtype == tf.float32
    np.testing.assert_allclose(served.numpy(), expected, atol=1e-5, rtol=0)
    content = tf.lite.TFLiteConverter.from_saved_model(saved).convert()
    np.testing.assert_allclose(_run_tflite(content, x), expected, atol=1e-5, rtol=0)


def test_dtype_policy_none_keeps_the_mixed_policy(mixed):
    kept, policy = mixed["kept"], mixed["policy"]
    loaded = keras.saving.load_model(mixed["folder"] / "kept.keras")  # the previous policy
    for model in (kept, loaded):
        assert model.get_layer("group0_block0_conv0").dtype_policy.name == policy
        assert model.get_layer("logits").dtype_policy.name == "float32"
        assert model.output.dtype == "float32"
    _close_to_half_precision(kept.predict(mixed["x"], verbose=0), mixed["logits"])


# === keras-hub students ===


def test_keras_hub_classifier_exports_core_layers_with_its_preprocessor(tmp_path):
    """The tiny ResNet classifier loads without keras-hub (the subprocess test); a preprocessor
    attached goes into the file as core layers, so no warning is given."""
    converter = keras_hub.layers.ResNetImageConverter(image_size=SHAPE[:2])
    classifier = _hub_resnet_classifier(
        keras_hub.models.ResNetImageClassifierPreprocessor(image_converter=converter))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        core = keras_at.export_student(classifier, tmp_path / "hub.keras")
    assert not [w for w in caught if issubclass(w.category, UserWarning)
                and ("not Keras's own" in str(w.message) or "preprocessor" in str(w.message))]
    assert type(core).__module__.startswith("keras.")  # a plain functional model
    with zipfile.ZipFile(tmp_path / "hub.keras") as archive:
        assert "keras_hub" not in archive.read("config.json").decode()
    x = np.random.default_rng(0).normal(size=(4, *SHAPE)).astype("float32")
    np.testing.assert_allclose(core.predict(x, verbose=0), classifier.predict(x, verbose=0),
                               atol=1e-5, rtol=0)


def test_keras_hub_layers_are_named_and_exported_float32(tmp_path):
    """keras-hub's ViT holds keras-hub layers (which do not rebuild from their own configs:
    the backbone is rebuilt by keras-hub); the warning names them, the copy is float32."""
    with global_policy("mixed_bfloat16"):
        backbone = keras_hub.models.ViTBackbone(image_shape=(16, 16, 3), patch_size=4,
                                                num_layers=1, num_heads=2, hidden_dim=8,
                                                mlp_dim=16)
        vit = keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=10,
                                                  preprocessor=None)
        x = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype("float32")
        logits = vit.predict(x, verbose=0).astype("float32")
        with pytest.warns(UserWarning, match=r"keras_hub: .*ViTBackbone.*"
                                             r"ViTPatchingAndEmbedding.*ViTEncoder"):
            core = keras_at.export_student(vit, tmp_path / "vit.keras")
    assert core.output.dtype == "float32"
    outputs = core.predict(x, verbose=0)
    _close_to_half_precision(outputs, logits)
    loaded = keras.saving.load_model(tmp_path / "vit.keras")  # keras_hub is imported here
    np.testing.assert_allclose(loaded.predict(x, verbose=0), outputs, atol=1e-6, rtol=0)
