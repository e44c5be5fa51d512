"""ResNet-18/34 (He et al., CVPR 2016) for ImageNet-sized inputs, built on keras-cv's backbone."""

from __future__ import annotations

import keras

from keras_at.models._layers import (
    check_int,
    check_weight_decay,
    coupled_l2,
    dense,
    he_normal,
)

# Blocks per group of the two basic-block ResNets the paper uses (§4.2).
STACKWISE_BLOCKS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}

# === Model ===


def resnet(
    depth: int = 18,
    num_classes: int = 1000,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    name: str | None = None,
    weight_decay: float = 0.0,
) -> keras.Model:
    """ResNet-18 or ResNet-34 with a linear classifier on global average pooling; returns logits.

    The graph is keras-cv's `ResNetBackbone` (basic blocks, filters 64-128-256-512, strides
    1-2-2-2, no rescaling, no pretrained weights), re-traced into one flat functional model so
    that the output of each group of residual blocks (the ReLU after its last `Add`, at 1/4,
    1/8, 1/16 and 1/32 of the input resolution) is a top-level layer named `group0` ...
    `group3`. The result holds only core Keras layers: it saves and loads without keras-cv.

    While re-tracing, convolution kernels get fb.resnet.torch's He normal init (fan_out,
    untruncated) instead of Glorot, and every parameter gets the optional weight decay.
    keras-cv pads stride-2 layers the TensorFlow way ("same": the extra row/column at the
    bottom/right), so shapes match Torch's ResNet but windows are shifted by a pixel; this
    matters only for porting Torch weights, which this function does not do. keras-cv is
    imported when this function is called, not with `keras_at.models`.

    Args:
        depth: 18 or 34.
        num_classes: number of logits.
        input_shape: `(H, W, C)` of one image; 64x64 or larger keeps `group3` at least 2x2.
        name: model name; defaults to `"resnet{depth}"`.
        weight_decay: coupled L2 decay as in Torch's `SGD(weight_decay=wd)`: every parameter
            (kernels, dense bias, BN scale and shift) carries a `keras.regularizers.L2(wd / 2)`
            penalty (gradient `wd * w` before momentum), unlike the decoupled
            `keras.optimizers.SGD(weight_decay=wd)`.

    Example:

    ```python
    student = keras_at.models.resnet(18, num_classes=200)
    teacher = keras_at.models.resnet(34, num_classes=200)
    student.get_layer("group2").output.shape  # (None, 14, 14, 256)
    ```
    """
    if isinstance(depth, bool) or depth not in STACKWISE_BLOCKS:
        raise ValueError(
            f"`depth` must be one of {sorted(STACKWISE_BLOCKS)} (basic-block ResNets), "
            f"got depth={depth!r}."
        )
    check_int(num_classes, "num_classes")
    weight_decay = check_weight_decay(weight_decay)

    # Imported here: keras-cv is heavy and only this family needs it.
    import keras_cv

    backbone = keras_cv.models.ResNetBackbone(
        stackwise_filters=[64, 128, 256, 512],
        stackwise_blocks=STACKWISE_BLOCKS[depth],
        stackwise_strides=[1, 2, 2, 2],
        block_type="basic_block",
        include_rescaling=False,
        input_shape=input_shape,
    )
    group_names = {backbone.pyramid_level_inputs[f"P{g + 2}"]: f"group{g}" for g in range(4)}
    features = keras.models.clone_model(
        backbone,
        input_tensors=keras.Input(shape=input_shape, name="image"),
        clone_function=lambda layer: _clone_layer(layer, group_names, weight_decay),
    )
    x = keras.layers.GlobalAveragePooling2D(name="pool")(features.output)
    logits = dense(x, num_classes, "logits", weight_decay)
    return keras.Model(features.input, logits, name=name or f"resnet{depth}")


# === Re-tracing ===


def _clone_layer(layer: keras.layers.Layer, group_names: dict, weight_decay: float):
    """A fresh copy of a backbone layer, renamed if it ends a group, with init and decay set."""
    config = layer.get_config()
    config["name"] = group_names.get(layer.name, layer.name)
    reg = keras.regularizers.serialize(coupled_l2(weight_decay))
    if isinstance(layer, keras.layers.Conv2D):
        config["kernel_initializer"] = keras.initializers.serialize(he_normal("fan_out"))
        config["kernel_regularizer"] = reg
        if config["use_bias"]:
            config["bias_regularizer"] = reg
    elif isinstance(layer, keras.layers.BatchNormalization):
        config["gamma_regularizer"] = reg
        config["beta_regularizer"] = reg
    return layer.__class__.from_config(config)
