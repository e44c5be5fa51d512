"""ResNet-18/34 (He et al., CVPR 2016) for ImageNet-sized inputs, on keras-cv's or keras-hub's
backbone."""

from __future__ import annotations

import sys

import keras

from keras_at._argument_checks import check_int, shapes_match
from keras_at.models._layers import (
    BN_EPSILON,
    BN_MOMENTUM,
    check_weight_decay,
    coupled_l2,
    dense,
    he_normal,
)
from keras_at.models.batch_norm import BatchNorm

# Blocks per group of the two basic-block ResNets the paper uses (§4.2).
STACKWISE_BLOCKS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}
FILTERS = [64, 128, 256, 512]
STRIDES = [1, 2, 2, 2]
LIBRARIES = ("keras_cv", "keras_hub")

# === Model ===


def resnet(
    depth: int = 18,
    num_classes: int = 1000,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    name: str | None = None,
    weight_decay: float = 0.0,
    backbone: str | keras.Model = "keras_cv",
) -> keras.Model:
    """ResNet-18 or ResNet-34 with a linear classifier on global average pooling; returns logits.

    The graph is a `ResNetBackbone` (basic blocks, filters 64-128-256-512, strides 1-2-2-2,
    no rescaling) from keras-cv or from its successor keras-hub, re-traced into one flat
    functional model so that the output of each group of residual blocks (the ReLU after its
    last `Add`, at 1/4, 1/8, 1/16 and 1/32 of the input resolution) is a top-level layer named
    `group0` ... `group3`. Whichever library built it, `pairs="auto"` pairs a ResNet-18 with
    a ResNet-34 group by group. The result holds core Keras layers and keras-at's `BatchNorm`:
    it saves and loads without keras-cv or keras-hub, where `keras_at` is imported;
    `keras_at.export_student` writes a copy of core Keras layers only, which loads without
    keras-at too.

    A backbone built here gets fb.resnet.torch's He normal init (fan_out, untruncated) on its
    convolution kernels instead of Glorot; a backbone passed in keeps its weights (a
    pretrained keras-hub preset stays pretrained). Every parameter gets the optional weight
    decay. Its BatchNormalization layers become `BatchNorm` (TensorFlow's fused kernel, Torch's
    unbiased running variance), with Torch's momentum and epsilon in a backbone built here and
    the backbone's own in one passed in. The libraries differ in padding: keras-hub pads
    stride-2 layers symmetrically as Torch does; keras-cv pads them "same" (the extra
    row/column at the bottom/right, windows shifted by a pixel). The library is imported when
    this function is called, not with `keras_at.models`. Under a mixed dtype policy the
    classifier computes in float32 (the logits are float32); the backbone's layers keep the
    policies they were built with.

    Args:
        depth: 18 or 34.
        num_classes: number of logits.
        input_shape: `(H, W, C)` of one image; 64x64 or larger keeps `group3` at least 2x2.
        name: model name; defaults to `"resnet{depth}"`.
        weight_decay: coupled L2 decay as in Torch's `SGD(weight_decay=wd)`: every parameter
            (kernels, dense bias, BN scale and shift) carries a `keras.regularizers.L2(wd / 2)`
            penalty (gradient `wd * w` before momentum), unlike the decoupled
            `keras.optimizers.SGD(weight_decay=wd)`.
        backbone: `"keras_cv"` or `"keras_hub"` (needs keras-hub installed, e.g. with
            `pip install ".[hub]"` in a keras-at checkout) builds a fresh backbone with that
            library. A built
            `keras_cv.models.ResNetBackbone` or `keras_hub.models.ResNetBackbone` of the
            `depth` given, such as keras-hub's ImageNet-pretrained
            `ResNetBackbone.from_preset("resnet_18_imagenet")`, is copied with its weights
            and left untouched; its input must accept `input_shape`.

    Example:

    ```python
    student = keras_at.models.resnet(18, num_classes=200, backbone="keras_hub")
    teacher = keras_at.models.resnet(34, num_classes=200)
    student.get_layer("group2").output.shape  # (None, 14, 14, 256)
    keras_at.Distiller(student, teacher).pairs  # [("group0", "group0"), ... ("group3", ...)]
    ```
    """
    if isinstance(depth, bool) or depth not in STACKWISE_BLOCKS:
        raise ValueError(
            f"`depth` must be one of {sorted(STACKWISE_BLOCKS)} (basic-block ResNets), "
            f"got depth={depth!r}."
        )
    check_int(num_classes, "num_classes")
    weight_decay = check_weight_decay(weight_decay)
    input_shape = tuple(input_shape)

    given = not isinstance(backbone, str)
    if given:
        library = _library_of(backbone)
        _check_backbone(backbone, library, depth, input_shape)
    elif backbone in LIBRARIES:
        library = backbone
        backbone = _BUILDERS[library](depth, input_shape)
    else:
        raise ValueError(
            f"`backbone` must be one of {list(LIBRARIES)} or a built ResNetBackbone of one of "
            f"them, got backbone={backbone!r}."
        )

    group_names = {end: f"group{g}" for g, end in enumerate(_group_ends(backbone, library))}
    features = keras.models.clone_model(
        backbone,
        input_tensors=keras.Input(shape=input_shape, name="image"),
        clone_function=lambda layer: _clone_layer(
            layer, group_names, weight_decay, he_init=not given
        ),
    )
    if given:
        for layer in backbone.layers:
            if layer.weights:
                clone = features.get_layer(group_names.get(layer.name, layer.name))
                clone.set_weights(layer.get_weights())
    x = keras.layers.GlobalAveragePooling2D(name="pool")(features.output)
    logits = dense(x, num_classes, "logits", weight_decay)
    return keras.Model(features.input, logits, name=name or f"resnet{depth}")


# === Backbones ===


def _keras_cv_backbone(depth: int, input_shape: tuple) -> keras.Model:
    # Imported here: keras-cv is heavy and only this family needs it.
    import keras_cv

    return keras_cv.models.ResNetBackbone(
        stackwise_filters=FILTERS,
        stackwise_blocks=STACKWISE_BLOCKS[depth],
        stackwise_strides=STRIDES,
        block_type="basic_block",
        include_rescaling=False,
        input_shape=input_shape,
    )


def _keras_hub_backbone(depth: int, input_shape: tuple) -> keras.Model:
    try:
        import keras_hub
    except ImportError as err:
        raise ImportError(
            "resnet(backbone='keras_hub') needs keras-hub, which could not be imported "
            f"({err}). Install it with `pip install keras-hub` (or `pip install \".[hub]\"` in a "
            "keras-at checkout), or use backbone='keras_cv'."
        ) from err
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=FILTERS,
        stackwise_num_blocks=STACKWISE_BLOCKS[depth],
        stackwise_num_strides=STRIDES,
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=input_shape,
    )


_BUILDERS = {"keras_cv": _keras_cv_backbone, "keras_hub": _keras_hub_backbone}


def _library_of(backbone) -> str:
    """The library whose `ResNetBackbone` `backbone` is; a backbone implies its library loaded."""
    for library in LIBRARIES:
        module = sys.modules.get(library)
        if module is not None and isinstance(backbone, module.models.ResNetBackbone):
            return library
    raise ValueError(
        f"`backbone` must be one of {list(LIBRARIES)} or a built keras_cv.models.ResNetBackbone "
        f"or keras_hub.models.ResNetBackbone, got a {type(backbone).__name__}."
    )


def _check_backbone(backbone, library: str, depth: int, input_shape: tuple) -> None:
    """A passed backbone must be the basic-block ResNet of `depth` and read `input_shape`."""
    config = backbone.get_config()
    if library == "keras_cv":
        expected = {
            "stackwise_filters": FILTERS,
            "stackwise_blocks": STACKWISE_BLOCKS[depth],
            "stackwise_strides": STRIDES,
            "block_type": "basic_block",
        }
        blocks = config["stackwise_blocks"]
    else:
        config = {**config, "data_format": backbone.data_format}  # not in keras-hub's config
        expected = {
            "data_format": "channels_last",
            "input_conv_filters": [64],
            "input_conv_kernel_sizes": [7],
            "stackwise_num_filters": FILTERS,
            "stackwise_num_blocks": STACKWISE_BLOCKS[depth],
            "stackwise_num_strides": STRIDES,
            "block_type": "basic_block",
            "use_pre_activation": False,
        }
        blocks = config["stackwise_num_blocks"]
    wrong = {key: config[key] for key, value in expected.items() if _as_list(config[key]) != value}
    if wrong:
        wanted = {key: expected[key] for key in wrong}
        other = [d for d, b in STACKWISE_BLOCKS.items() if b == _as_list(blocks) and d != depth]
        hint = f" It is a ResNet-{other[0]}: pass depth={other[0]}." if other else ""
        raise ValueError(
            f"The {library} backbone {backbone.name!r} is not the basic-block ResNet-{depth} "
            f"that resnet(depth={depth}) builds: it has {wrong}, expected {wanted}.{hint}"
        )
    shape = tuple(backbone.input.shape[1:])
    if not shapes_match(shape, input_shape):
        raise ValueError(
            f"The backbone {backbone.name!r} reads images of shape {shape}, which does not "
            f"accept input_shape={input_shape}: pass input_shape={shape} or build the "
            "backbone with a matching (or unspecified) image shape."
        )


def _as_list(value):
    """Configs hold lists or tuples, depending on how the backbone was made."""
    return list(value) if isinstance(value, (list, tuple)) else value


def _group_ends(backbone, library: str) -> list[str]:
    """Names of the layers ending the four groups: the backbones' P2 ... P5 pyramid levels."""
    levels = [f"P{g + 2}" for g in range(len(FILTERS))]
    if library == "keras_cv":
        return [backbone.pyramid_level_inputs[level] for level in levels]
    by_output = {id(layer.output): layer.name for layer in backbone.layers}
    return [by_output[id(backbone.pyramid_outputs[level])] for level in levels]


# === Re-tracing ===


def _clone_layer(
    layer: keras.layers.Layer, group_names: dict, weight_decay: float, he_init: bool
):
    """A fresh copy of a backbone layer, renamed if it ends a group, with init and decay set."""
    config = layer.get_config()
    config["name"] = group_names.get(layer.name, layer.name)
    reg = keras.regularizers.serialize(coupled_l2(weight_decay))
    if isinstance(layer, keras.layers.Conv2D):
        if he_init:
            config["kernel_initializer"] = keras.initializers.serialize(he_normal("fan_out"))
        config["kernel_regularizer"] = reg
        if config["use_bias"]:
            config["bias_regularizer"] = reg
    elif isinstance(layer, keras.layers.BatchNormalization):
        config["gamma_regularizer"] = reg
        config["beta_regularizer"] = reg
        if he_init:  # a fresh network: fb.resnet.torch's statistics; a pretrained one keeps its
            config["momentum"], config["epsilon"] = BN_MOMENTUM, BN_EPSILON
        return BatchNorm.from_config(config)  # the fused kernel
    return layer.__class__.from_config(config)
