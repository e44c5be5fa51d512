"""Taps inside nested models, networks built for any image size, and transformer tokens.

keras-hub classifiers (a Backbone nested in its ImageClassifier), keras.applications models,
keras_at's WRN wrapped behind an input layer, ViTs: all with random weights, at 16-64 pixels.
About 100 s on two shared CPU cores, mostly tracing: the ViT <-> WRN and keras-hub ResNet <-
MobileNetV3 fits take about 30 s each, the rest under 12 s.
"""

import keras
import numpy as np
import pytest
from conftest import tiny_net
from nested_models import classifier, cnn, functional_vit

import keras_at
from keras_at.features import auto_pairs

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def data(size, n=16, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, size, size, 3)).astype("float32"), rng.integers(0, classes, n)


def fit(distiller, size, epochs=1, optimizer=None, **kwargs):
    x, y = data(size)
    distiller.compile(optimizer=optimizer or keras.optimizers.SGD(0.01), loss=CE,
                      jit_compile=False, **kwargs)
    return distiller.fit(x, y, batch_size=8, epochs=epochs, verbose=0).history


# === keras-hub: a Backbone nested in its ImageClassifier, built for any image size ===


def hub_resnet():
    """keras-hub ResNet-ish classifier, image_shape (None, None, 3) (keras-hub's default)."""
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 16, 32], stackwise_num_blocks=[1, 1, 1],
        stackwise_num_strides=[1, 2, 2], block_type="basic_block", use_pre_activation=False,
        name="res_net_backbone",
    )
    return keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=5)


def hub_efficientnet():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0] * 3, stackwise_depth_coefficients=[1.0] * 3,
        stackwise_kernel_sizes=[3, 3, 3], stackwise_num_repeats=[1, 1, 1],
        stackwise_input_filters=[8, 8, 16], stackwise_output_filters=[8, 16, 24],
        stackwise_expansion_ratios=[1, 2, 2], stackwise_squeeze_and_excite_ratios=[0.25] * 3,
        stackwise_strides=[1, 2, 2], stackwise_block_types=["v1"] * 3, num_features=32,
        name="efficient_net_backbone",
    )
    return keras_hub.models.EfficientNetImageClassifier(backbone=backbone, num_classes=5)


def hub_vit(size=32, patch=4):
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(size, size, 3), patch_size=patch, num_layers=2, num_heads=2, hidden_dim=16,
        mlp_dim=32, name="vit",
    )
    return keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=5)


@pytest.mark.slow  # trains networks for over ~3 s
def test_keras_hub_resnet_teacher_pairs_inside_its_backbone_at_the_students_size():
    teacher = hub_resnet()
    student = keras.applications.MobileNetV3Small(
        weights=None, input_shape=(64, 64, 3), classes=5, classifier_activation=None,
        include_preprocessing=False,
    )
    distiller = keras_at.Distiller(student, teacher)
    # The teacher reads any size: the student's 64x64 gives the resolutions. The backbone's
    # pyramid_outputs (its stack outputs) are its taps below the stem.
    assert [t for _, t in distiller.pairs] == [
        "res_net_backbone/conv1_relu", "res_net_backbone/stack0_block0_out",
        "res_net_backbone/stack1_block0_out", "res_net_backbone/stack2_block0_out",
    ]
    # The stem's hard-swish Activation has a name Keras numbers per session.
    assert distiller.pairs[0][0].startswith("activation")
    assert [s for s, _ in distiller.pairs[1:]] == [
        "expanded_conv_project_bn", "expanded_conv_2_add", "expanded_conv_7_add"]
    teacher_before = [w.copy() for w in teacher.get_weights()]  # moving statistics included
    history = fit(distiller, 64)
    assert np.isfinite(history["at_loss"][0]) and history["at_loss"][0] > 0
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)


@pytest.mark.slow  # trains networks for over ~3 s
def test_keras_hub_efficientnet_student_both_built_for_any_size_take_input_shape():
    student, teacher = hub_efficientnet(), hub_resnet()
    with pytest.raises(ValueError, match=r"student and the teacher are built for images of any "
                                         r"size: pass `input_shape"):
        keras_at.Distiller(student, teacher)
    distiller = keras_at.Distiller(student, teacher, input_shape=(64, 64, 3))
    assert distiller.pairs == [
        ("efficient_net_backbone/block1a_add", "res_net_backbone/conv1_relu"),
        ("efficient_net_backbone/block2a_project_bn", "res_net_backbone/stack0_block0_out"),
        ("efficient_net_backbone/top_activation", "res_net_backbone/stack1_block0_out"),
    ]
    history = fit(distiller, 64)
    assert np.isfinite(history["at_loss"][0]) and history["at_loss"][0] > 0


def test_explicit_pairs_name_nested_layers_by_path_or_unique_bare_name():
    teacher = hub_resnet()
    student = tiny_net(4, "student", size=64)
    distiller = keras_at.Distiller(
        student, teacher,
        pairs=[("group0", "res_net_backbone/conv1_relu"), ("group1", "stack0_block0_out")],
    )
    assert distiller.pairs == [("group0", "res_net_backbone/conv1_relu"),
                               ("group1", "stack0_block0_out")]
    x, _ = data(64, n=2)
    maps = distiller.attention_maps(x)
    assert set(maps) == {"group0-res_net_backbone/conv1_relu", "group1-stack0_block0_out"}
    assert maps["group1-stack0_block0_out"][1].shape == (2, 32, 32)  # resized to the student's
    with pytest.raises(ValueError, match=r"no layer named 'stack9'.*'res_net_backbone/stack0_"
                                         r"block0_out'"):
        keras_at.Distiller(student, teacher, pairs=[("group0", "stack9")])


@pytest.mark.slow  # trains networks for over ~3 s
def test_an_ambiguous_bare_name_lists_the_full_paths():
    inputs = keras.Input((16, 16, 3))
    left, right = cnn(4, "left")(inputs), cnn(4, "right")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Concatenate()([left, right]))
    teacher = keras.Model(inputs, keras.layers.Dense(5)(x), name="twin")
    with pytest.raises(ValueError, match=r"2 layers named 'stage1'.*\['left/stage1', "
                                         r"'right/stage1'\]. Name one by its path"):
        keras_at.Distiller(tiny_net(4), teacher, pairs=[("group1", "stage1")])
    distiller = keras_at.Distiller(tiny_net(4), teacher, pairs=[("group1", "right/stage1")])
    assert distiller.pairs == [("group1", "right/stage1")]
    # Both nested networks hold a `conv0`: the tap still runs each once, and trains.
    history = fit(distiller, 16)
    assert np.isfinite(history["at_loss"][0]) and history["at_loss"][0] > 0


# === A network nested behind an input layer ===


def test_a_wrapped_wrn_pairs_its_groups_not_the_input_convolution():
    inputs = keras.Input((16, 16, 3))
    wrn = keras_at.models.wide_resnet(10, 1, num_classes=5, input_shape=(16, 16, 3))
    student = keras.Model(inputs, wrn(keras.layers.Conv2D(3, 1, name="color")(inputs)))
    teacher_inputs = keras.Input((16, 16, 3))
    wrn2 = keras_at.models.wide_resnet(10, 2, num_classes=5, input_shape=(16, 16, 3))
    teacher = keras.Model(teacher_inputs,
                          wrn2(keras.layers.Conv2D(3, 1, name="color")(teacher_inputs)))
    distiller = keras_at.Distiller(student, teacher)
    assert distiller.pairs == [(f"wrn-10-1/group{g}", f"wrn-10-2/group{g}") for g in range(3)]
    # Without group names: each resolution's last block output, the input 1x1 conv left out.
    assert auto_pairs(student, classifier(cnn(8, "plain"))) == [
        ("wrn-10-1/group0", "plain/stage0"), ("wrn-10-1/group1", "plain/stage1")]


class Opaque(keras.Model):
    """A subclassed network: one layer to the graph around it, its insides unreachable."""

    def __init__(self):
        super().__init__(name="opaque")
        self.body = keras.layers.Conv2D(8, 3, strides=4, padding="same")
        self.head = keras.layers.Dense(5)

    def call(self, inputs):
        return self.head(keras.ops.mean(self.body(inputs), axis=(1, 2)))


def test_auto_pairs_refuse_a_pairing_of_input_level_layers_only():
    inputs = keras.Input((16, 16, 3))
    teacher = keras.Model(inputs, Opaque()(keras.layers.Conv2D(3, 1, name="color")(inputs)))
    with pytest.raises(ValueError, match=r"would pair only \[\('group0', 'color'\)\]: layers "
                                         r"at the input"):
        keras_at.Distiller(tiny_net(4), teacher)
    # Asked for by name, the same pair is the user's choice.
    assert keras_at.Distiller(tiny_net(4), teacher, pairs=[("group0", "color")]).pairs == [
        ("group0", "color")]


def test_a_single_pair_at_the_input_resolution_is_warned_about():
    def plain(name, strides):
        inputs = keras.Input((16, 16, 3))
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name=f"{name}_full")(x)
        if strides:
            x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name=f"{name}_half")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(5)(x), name=name)

    # A student that never downsamples: its one resolution is the input's.
    with pytest.warns(UserWarning, match=r"pairs only \[\('s_full', 't_full'\)\], at the input "
                                         r"resolution \(16, 16\), while resolutions \[\(8, 8\)\]"):
        assert auto_pairs(plain("s", 0), plain("t", 2)) == [("s_full", "t_full")]


# === Each network runs once per step; the training flag and BatchNorm reach inner layers ===


@pytest.mark.slow  # trains networks for over ~3 s
def test_each_network_runs_once_per_step_with_its_training_flag():
    student = classifier(cnn(4, "student_backbone", probe=True), name="student")
    teacher = classifier(cnn(8, "teacher_backbone", probe=True), name="teacher")
    probes = {role: model.layers[1].get_layer("probe") for role, model in
              (("student", student), ("teacher", teacher))}
    bn = {role: model.layers[1].get_layer("bn0") for role, model in
          (("student", student), ("teacher", teacher))}
    stats = {role: layer.moving_mean.numpy().copy() for role, layer in bn.items()}
    distiller = keras_at.Distiller(student, teacher)
    assert distiller.pairs == [("student_backbone/stage0", "teacher_backbone/stage0"),
                               ("student_backbone/stage1", "teacher_backbone/stage1")]
    # The tap is one flat graph: each layer of the nested network appears once.
    assert sum(isinstance(layer, keras.layers.Conv2D)
               for layer in distiller._taps.student.layers) == 3

    calls = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            for probe in probes.values():
                probe.calls.clear()

        def on_train_batch_end(self, batch, logs=None):
            calls.append({role: list(probe.calls) for role, probe in probes.items()})

    x, y = data(16)
    distiller.compile(optimizer="sgd", loss=CE, run_eagerly=True)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[Record()])
    assert calls == [{"student": [True], "teacher": [False]}] * 2
    assert not np.allclose(bn["student"].moving_mean.numpy(), stats["student"])
    np.testing.assert_array_equal(bn["teacher"].moving_mean.numpy(), stats["teacher"])


# === Pair names that are paths, everywhere a pair name goes ===


@pytest.mark.slow  # trains networks for over ~3 s
def test_path_pairs_with_hints_logger_saving_and_plots(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    student = classifier(cnn(4, "s_net"), name="student")
    teacher = classifier(cnn(8, "t_net"), name="teacher")
    distiller = keras_at.Distiller(student, teacher, hint_beta=1.0)
    # Channel counts differ: each pair has a 1x1 adapter, named without the path's "/".
    assert [a.name for a in distiller.hint_adapters] == [
        "hint_adapter_s_net_stage0", "hint_adapter_s_net_stage1"]
    x, y = data(16)
    logger = keras_at.callbacks.AttentionMapLogger(tmp_path / "logs", x[:2])
    distiller.compile(optimizer="sgd", loss=CE, jit_compile=False)
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[logger])
    assert history.history["hint_loss"][0] > 0
    events = EventAccumulator(str(tmp_path / "logs" / "attention"),
                              size_guidance={"tensors": 0}).Reload()
    assert "attention/s_net/stage1-t_net/stage1/distance" in events.Tags()["tensors"]

    path = tmp_path / "distiller.weights.h5"
    distiller.save_weights(path)
    again = keras_at.Distiller(classifier(cnn(4, "s_net"), name="student"),
                               classifier(cnn(8, "t_net"), name="teacher"), hint_beta=1.0)
    again.load_weights(path)
    np.testing.assert_allclose(again.predict(x, verbose=0), distiller.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    figure = keras_at.visualize.plot_attention(distiller, x[:2], tmp_path / "maps.png")
    assert figure.axes[1].get_title() == "s_net/stage0-t_net/stage0\nteacher"


# === Transformers: tokens laid on their patch grid ===


def test_token_map_is_the_encoder_output_reshaped():
    teacher = hub_vit()
    student = keras_at.models.wide_resnet(10, 1, num_classes=5, input_shape=(32, 32, 3))
    distiller = keras_at.Distiller(student, teacher)
    # The keras-hub encoder is one layer: only its output is reachable, at the 8x8 patch grid.
    assert distiller.pairs == [("group2", "vit/vit_encoder")]
    x, _ = data(32, n=3)
    _, token_map = distiller._taps.teacher(x, training=False)
    tokens = keras.ops.convert_to_numpy(teacher.backbone(x))  # (3, 1 + 64, 16)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(token_map),
                                  tokens[:, 1:].reshape(3, 8, 8, 16))


@pytest.mark.slow  # trains networks for over ~3 s
def test_vit_teacher_and_cnn_student_train_both_ways():
    vit = hub_vit()
    wrn = keras_at.models.wide_resnet(10, 1, num_classes=5, input_shape=(32, 32, 3))
    # ViT -> CNN.
    history = fit(keras_at.Distiller(wrn, vit), 32, epochs=3,
                  optimizer=keras.optimizers.Adam(0.01))
    assert np.isfinite(history["at_loss"]).all()
    assert history["at_loss"][-1] < history["at_loss"][0]
    # CNN -> ViT: the student's token map pairs with the teacher's block at its 8x8 grid.
    distiller = keras_at.Distiller(hub_vit(), wrn)
    assert distiller.pairs == [("vit/vit_encoder", "group2")]
    history = fit(distiller, 32, epochs=3, optimizer=keras.optimizers.Adam(0.01))
    assert np.isfinite(history["at_loss"]).all() and history["at_loss"][0] > 0
    assert history["at_loss"][-1] < history["at_loss"][0]


def test_a_vit_without_a_matching_resolution_pairs_the_nearest():
    # A 4x4 patch grid on 32x32 images; the WRN has 32x32, 16x16 and 8x8 maps.
    student = keras_at.models.wide_resnet(10, 1, num_classes=5, input_shape=(32, 32, 3))
    assert auto_pairs(student, hub_vit(patch=8)) == [("group2", "vit/vit_encoder")]


def test_a_functional_vit_exposes_every_block():
    vit = functional_vit("vit")
    names = [info.name for info in keras_at._graph.list_features(vit)]
    assert {"block0", "block1", "block0_attention", "block1_mlp2", "class_token"} <= set(names)
    distiller = keras_at.Distiller(
        tiny_net(4, "cnn"), vit, pairs=[("group1", "block0"), ("group1", "block1")]
    )
    x, y = data(16)
    maps = distiller.attention_maps(x[:2])
    assert maps["group1-block0"][1].shape == (2, 8, 8)  # the 4x4 grid resized to the student's
    # Auto: the ViT's last block at its 4x4 grid pairs with the CNN's nearest resolution (8x8).
    assert auto_pairs(tiny_net(4, "cnn"), vit) == [("group1", "block1")]
    history = fit(keras_at.Distiller(vit, tiny_net(8, "cnn")), 16, epochs=3,
                  optimizer=keras.optimizers.Adam(0.01))
    assert np.isfinite(history["at_loss"]).all()
    assert history["at_loss"][-1] < history["at_loss"][0]


# === Input shapes ===


def test_open_sizes_take_the_other_networks_and_fixed_ones_must_agree():
    def open_net(channels=3, name=None):
        inputs = keras.Input((None, None, channels))
        x = keras.layers.Conv2D(4, 3, padding="same", name="group0")(inputs)
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="group1")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(5)(x), name=name)

    distiller = keras_at.Distiller(open_net(), tiny_net(8, size=16))
    assert tuple(distiller._taps.student.inputs[0].shape) == (None, 16, 16, 3)
    with pytest.raises(ValueError, match=r"student's input shape \(None, None, 1\) differs from "
                                         r"the teacher's \(16, 16, 3\)"):
        keras_at.Distiller(open_net(channels=1), tiny_net(8, size=16))
    with pytest.raises(ValueError, match=r"teacher's input shape \(16, 16, 3\) differs from the "
                                         r"Distiller's `input_shape` \(32, 32, 3\)"):
        keras_at.Distiller(open_net(), tiny_net(8, size=16), input_shape=(32, 32, 3))
    # Both open, group names: the taps keep any size.
    both = keras_at.Distiller(open_net(name="s"), open_net(name="t"))
    assert tuple(both._taps.teacher.inputs[0].shape) == (None, None, None, 3)
    x, y = data(12)
    assert both.predict(x, verbose=0).shape == (16, 5)
