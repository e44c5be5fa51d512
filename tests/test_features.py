"""Taps and `pairs="auto"` on models users bring: keras.applications, models of different
sizes, subclassed models (keras_at's ResNets: tests/test_models.py)."""

import keras
import numpy as np
import pytest
from conftest import fit_one_epoch, tiny_net

import keras_at
from keras_at.features import auto_pairs

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.slow  # ImageNet-size networks
def test_mobilenetv2_student_from_resnet50_teacher_pairs_by_resolution():
    student = keras.applications.MobileNetV2(
        weights=None, alpha=0.35, input_shape=(96, 96, 3), classes=10,
        classifier_activation=None,
    )
    teacher = keras.applications.ResNet50(
        weights=None, input_shape=(96, 96, 3), classes=10, classifier_activation=None
    )
    distiller = keras_at.Distiller(student, teacher)
    # One pair per shared resolution, 48x48 down to 3x3: the last block output of each.
    assert distiller.pairs == [
        # MobileNetV2's first block has no shortcut: its linear bottleneck ends it, not the
        # expansion ReLU that opens block_1 (nor the 49x49 block_1_pad); ResNet50's stem.
        ("expanded_conv_project_BN", "conv1_relu"),
        ("block_2_add", "conv2_block3_out"),
        ("block_5_add", "conv3_block4_out"),
        ("block_12_add", "conv4_block6_out"),
        # block_16 follows the last Add at 3x3; Conv_1/out_relu is the 1x1-conv head.
        ("block_16_project_BN", "conv5_block3_out"),
    ]
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    history = fit_one_epoch(distiller, 96, 10)
    assert np.isfinite(history["at_loss"][0]) and history["at_loss"][0] > 0
    for before, after in zip(teacher_weights, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_block_outputs_skip_preprocessing_padding_and_1x1_maps():
    def net(width, name):
        inputs = keras.Input((16, 16, 3))
        x = keras.layers.Rescaling(1 / 255)(inputs)  # the only 16x16 layer
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same")(x)
        for stride in (1, 2):
            y = keras.layers.ZeroPadding2D(1)(x)
            y = keras.layers.Conv2D(width, 3, strides=stride)(y)
            y = keras.layers.BatchNormalization()(y)
            # Squeeze-excitation: 1x1 maps multiplied back onto the block.
            s = keras.layers.GlobalAveragePooling2D(keepdims=True)(y)
            s = keras.layers.Conv2D(width, 1, activation="sigmoid")(s)
            y = keras.layers.Multiply()([y, s])
            shortcut = x if stride == 1 else keras.layers.Conv2D(width, 1, strides=2)(x)
            x = keras.layers.Add(name=f"{name}_add{stride}")([y, shortcut])
            x = keras.layers.ReLU(name=f"{name}_out{stride}")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(3)(x), name=name)

    assert auto_pairs(net(4, "s"), net(8, "t")) == [("s_out1", "t_out1"), ("s_out2", "t_out2")]


def test_different_input_resolutions_are_refused():
    with pytest.raises(ValueError, match=r"\(16, 16, 3\) differs from the teacher's \(32, 32, 3\)"):
        keras_at.Distiller(tiny_net(4, size=16), tiny_net(8, size=32))


def test_paired_maps_of_different_sizes_are_resized(tiny_data):
    x, y = tiny_data
    student, teacher = tiny_net(4, "s"), tiny_net(8, "t")
    # group0 is 16x16 and group1 8x8: each pair crosses resolutions, both ways.
    pairs = [("group0", "group1"), ("group1", "group0")]
    distiller = keras_at.Distiller(student, teacher, pairs=pairs)
    maps = distiller.attention_maps(x[:4])
    assert maps["group0-group1"][1].shape == (4, 16, 16)
    assert maps["group1-group0"][1].shape == (4, 8, 8)
    distiller.compile(optimizer=keras.optimizers.Adam(0.01), loss=CE, jit_compile=False)
    history = distiller.fit(x, y, batch_size=32, epochs=2, verbose=0).history
    assert history["at_loss"][-1] < history["at_loss"][0]


class DictNet(keras.Model):
    """The documented route for subclassed models: call() returns logits and named features."""

    def __init__(self, keys=("stage0", "stage1"), width=6, **kwargs):
        super().__init__(**kwargs)
        self.keys = keys
        self.conv0 = keras.layers.Conv2D(width, 3, padding="same", activation="relu")
        self.conv1 = keras.layers.Conv2D(2 * width, 3, strides=2, padding="same",
                                         activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(5)

    def call(self, inputs):
        f0 = self.conv0(inputs)
        f1 = self.conv1(f0)
        return {"logits": self.head(self.pool(f1)), self.keys[0]: f0, self.keys[1]: f1}


def test_subclassed_student_with_dict_outputs_trains_with_a_functional_teacher(tiny_data):
    x, y = tiny_data
    teacher = tiny_net(8, "teacher")
    # No groupN names on the student: its features pair with the teacher's by resolution.
    distiller = keras_at.Distiller(DictNet(), teacher)
    assert distiller.pairs == [("stage0", "group0"), ("stage1", "group1")]
    distiller.compile(optimizer=keras.optimizers.Adam(0.01), loss=CE, jit_compile=False)
    history = distiller.fit(x, y, batch_size=32, epochs=2, verbose=0).history
    assert history["at_loss"][-1] < history["at_loss"][0]
    logits = distiller.student(x[:2])["logits"]
    assert logits.shape == (2, 5)
    # Dict keys named groupN are groups, matched by name like layers.
    grouped = keras_at.Distiller(DictNet(keys=("group0", "group1")), teacher)
    assert grouped.pairs == [("group0", "group0"), ("group1", "group1")]


def test_subclassed_model_returning_a_bare_tensor_is_refused():
    class Plain(keras.Model):
        def __init__(self):
            super().__init__(name="plain")
            self.conv = keras.layers.Conv2D(4, 3, padding="same")
            self.head = keras.layers.Dense(5)

        def call(self, inputs):
            return self.head(keras.ops.mean(self.conv(inputs), axis=(1, 2)))

    with pytest.raises(ValueError, match=r"'plain' is a subclassed model.*return a dict"):
        keras_at.Distiller(Plain(), tiny_net(8, "teacher"))


def test_two_subclassed_models_need_the_input_shape(tiny_data):
    x, y = tiny_data
    with pytest.raises(ValueError, match="input_shape=\\(H, W, C\\)"):
        keras_at.Distiller(DictNet(width=4), DictNet(width=8))
    distiller = keras_at.Distiller(DictNet(width=4), DictNet(width=8), input_shape=(16, 16, 3))
    assert distiller.pairs == [("stage0", "stage0"), ("stage1", "stage1")]
    distiller.compile(optimizer=keras.optimizers.Adam(0.01), loss=CE, jit_compile=False)
    history = distiller.fit(x, y, batch_size=32, epochs=2, verbose=0).history
    assert history["at_loss"][-1] < history["at_loss"][0]
