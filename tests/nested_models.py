"""Small networks for the taps' tests: networks nested in networks, and a functional ViT.

Keras only (no TensorFlow, no keras-hub): tests/jax builds them too.
"""

import keras
from keras import ops


class Probe(keras.layers.Layer):
    """The identity, recording the `training` flag of every call it runs."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = []

    def call(self, inputs, training=None):
        self.calls.append(training)
        return inputs


def cnn(width, name, size=16, channels=3, probe=False):
    """Two resolutions (`size` and `size / 2`), with BatchNormalization; no `groupN` names.

    Every layer is named by its role only, so two of them nested in one model share names.
    """
    inputs = keras.Input((size, size, channels))
    x = keras.layers.Conv2D(width, 3, padding="same", name="conv0")(inputs)
    if probe:
        x = Probe(name="probe")(x)
    x = keras.layers.BatchNormalization(name="bn0")(x)
    x = keras.layers.ReLU(name="stage0")(x)
    x = keras.layers.Conv2D(2 * width, 3, strides=2, padding="same", name="conv1")(x)
    shortcut = keras.layers.Conv2D(2 * width, 1, strides=2, name="shortcut")(inputs)
    x = keras.layers.Add(name="stage1")([x, shortcut])
    return keras.Model(inputs, x, name=name)


def classifier(backbone, classes=5, name=None):
    """`backbone` (a functional feature extractor) nested in a classifier, keras-hub style."""
    inputs = keras.Input(backbone.inputs[0].shape[1:])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(backbone(inputs))
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(x), name=name)


class ClassToken(keras.layers.Layer):
    """Prepends a learned class token to `(B, N, C)` tokens."""

    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="random_normal")

    def call(self, tokens):
        batch = ops.shape(tokens)[0]
        token = ops.broadcast_to(self.token, (batch, 1, tokens.shape[-1]))
        return ops.concatenate([token, tokens], axis=1)

    def compute_output_shape(self, input_shape):
        tokens = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], tokens, input_shape[2])


def functional_vit(name, size=16, patch=4, dim=16, depth=2, classes=5):
    """A ViT whose every block is its own layers: a patch convolution, a class token, blocks
    ending in an `Add` named `block<i>`, the class token's logits."""
    grid = size // patch
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(dim, patch, strides=patch, name="patches")(inputs)
    x = keras.layers.Reshape((grid * grid, dim), name="tokens")(x)
    x = ClassToken(name="class_token")(x)
    for i in range(depth):
        y = keras.layers.LayerNormalization(name=f"block{i}_norm1")(x)
        y = keras.layers.MultiHeadAttention(2, dim // 2, name=f"block{i}_attention")(y, y)
        x = keras.layers.Add(name=f"block{i}_residual")([x, y])
        y = keras.layers.LayerNormalization(name=f"block{i}_norm2")(x)
        y = keras.layers.Dense(2 * dim, activation="gelu", name=f"block{i}_mlp1")(y)
        y = keras.layers.Dense(dim, name=f"block{i}_mlp2")(y)
        x = keras.layers.Add(name=f"block{i}")([x, y])
    x = keras.layers.LayerNormalization(name="norm")(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="head")(x[:, 0]), name=name)
