"""AttentionTransfer inside core Keras's `keras.distillation.Distiller`."""

import keras
import numpy as np
import pytest

import keras_at
from keras_at.interop import AttentionTransfer

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
# (student layer, teacher layer); the last pair crosses resolutions: 8x8 student, 16x16 teacher.
PAIRS = [("group0", "group0"), ("group1", "group1"), ("group1", "group0")]


def layer_outputs(model, names, x, training=False):
    tap = keras.Model(model.inputs[0], [model.get_layer(n).output for n in names])
    return tap(x, training=training)


def at_distance(student, teacher, x, training=False):
    """sum over PAIRS of keras_at.at_loss, computed outside core's Distiller."""
    s = layer_outputs(student, [s for s, _ in PAIRS], x, training)
    t = layer_outputs(teacher, [t for _, t in PAIRS], x)
    return [float(keras_at.at_loss(a, b)) for a, b in zip(s, t)]


def core_distiller(student, teacher, weights, student_loss_weight=0.5):
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=[AttentionTransfer(t, s) for s, t in PAIRS],
        distillation_loss_weights=weights,
        student_loss_weight=student_loss_weight,
    )
    distiller.compile(optimizer=keras.optimizers.Adam(0.01), loss=CE, jit_compile=False)
    return distiller


def test_core_distiller_with_attention_transfer_shrinks_the_attention_distance(
    tiny_pair, tiny_data
):
    student, teacher = tiny_pair
    x, y = tiny_data
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    before = at_distance(student, teacher, x)

    distiller = core_distiller(student, teacher, [1e3] * len(PAIRS))
    history = distiller.fit(x, y, batch_size=32, epochs=4, verbose=0)

    after = at_distance(student, teacher, x)
    assert all(a < b for a, b in zip(after, before)), (before, after)
    assert sum(after) < 0.6 * sum(before), (before, after)
    losses = history.history["distillation_loss"]
    assert losses[-1] < losses[0]
    for w0, w1 in zip(teacher_weights, teacher.get_weights()):
        np.testing.assert_array_equal(w0, w1)


def test_the_value_core_computes_is_keras_at_at_loss(tiny_pair, tiny_data):
    student, teacher = tiny_pair
    x, y = tiny_data
    weights = [1.0, 2.0, 3.0]
    distiller = core_distiller(student, teacher, weights, student_loss_weight=0.0)
    x = keras.ops.convert_to_tensor(x[:16])
    core_value = float(distiller.compute_loss(x, y[:16], training=True))
    # Core's student feature extractor always runs in training mode (BN on batch statistics).
    expected = at_distance(student, teacher, x, training=True)
    assert core_value == pytest.approx(sum(w * v for w, v in zip(weights, expected)), rel=1e-5)
    assert min(expected) > 0


def test_layers_are_checked_when_core_distiller_is_built(tiny_pair):
    student, teacher = tiny_pair

    def build(loss):
        return keras.distillation.Distiller(teacher, student, distillation_losses=[loss])

    with pytest.raises(ValueError, match=r"no layer named 'grop1'.*'group1'"):
        build(AttentionTransfer("grop1", "group1"))
    with pytest.raises(ValueError, match=r"'head' outputs shape \(None, 5\).*4-D"):
        build(AttentionTransfer("group1", "head"))
    with pytest.raises(ValueError, match="student_layer_name"):
        AttentionTransfer("group1", None)
    with pytest.raises(ValueError, match="reduction"):
        AttentionTransfer("group1", "group1", reduction="median")

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.conv = keras.layers.Conv2D(4, 3)
            self.head = keras.layers.Dense(5)

        def call(self, inputs):
            return self.head(keras.ops.mean(self.conv(inputs), axis=(1, 2)))

    sub = Subclassed()
    sub(np.zeros((1, 16, 16, 3), "float32"))
    with pytest.raises(ValueError, match="keras_at.Distiller"):
        keras.distillation.Distiller(teacher, sub, [AttentionTransfer("group1", "conv")])


def test_a_layer_inside_a_nested_model_is_refused_with_keras_at_distiller_named(tiny_pair):
    student, _ = tiny_pair
    inputs = keras.Input((16, 16, 3))
    backbone = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs), name="bb")
    teacher_inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(teacher_inputs))
    teacher = keras.Model(teacher_inputs, keras.layers.Dense(5)(x))
    with pytest.raises(ValueError, match=r"'conv' is inside a nested model.*\['bb/conv'\].*"
                                         r"keras_at.Distiller pairs nested layers by path"):
        keras.distillation.Distiller(teacher, student, [AttentionTransfer("conv", "group0")])


def test_validate_outputs_accepts_different_shapes_and_refuses_non_maps():
    loss = AttentionTransfer("t", "s")
    loss.validate_outputs(np.zeros((2, 16, 16, 8)), np.zeros((2, 8, 8, 4)))
    with pytest.raises(ValueError, match="4-D"):
        loss.validate_outputs(np.zeros((2, 16, 16, 8)), np.zeros((2, 10)))


def test_config_round_trip():
    loss = AttentionTransfer("conv4_block6_out", "block_12_add", p=1, reduction="max")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, AttentionTransfer)
    assert restored.get_config() == loss.get_config() == {
        "teacher_layer_name": "conv4_block6_out",
        "student_layer_name": "block_12_add",
        "p": 1,
        "reduction": "max",
    }
