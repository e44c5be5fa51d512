"""Wide Residual Networks (Zagoruyko & Komodakis, BMVC 2016) as in the attention-transfer code."""

from __future__ import annotations

import keras

from keras_at._argument_checks import check_int
from keras_at.models._layers import batch_norm, check_weight_decay, conv2d, dense

# === Blocks ===


def _block(x, filters: int, strides: int, dropout_rate: float, weight_decay: float, name: str):
    """Pre-activation basic block; the shortcut reads the pre-activated input when it projects."""
    o1 = batch_norm(x, f"{name}_bn0", weight_decay)
    o1 = keras.layers.Activation("relu", name=f"{name}_relu0")(o1)
    y = conv2d(o1, filters, 3, f"{name}_conv0", strides=strides, weight_decay=weight_decay)
    o2 = batch_norm(y, f"{name}_bn1", weight_decay)
    o2 = keras.layers.Activation("relu", name=f"{name}_relu1")(o2)
    if dropout_rate > 0:
        o2 = keras.layers.Dropout(dropout_rate, name=f"{name}_dropout")(o2)
    z = conv2d(o2, filters, 3, f"{name}_conv1", weight_decay=weight_decay)
    if x.shape[-1] != filters:
        shortcut = conv2d(
            o1, filters, 1, f"{name}_convdim", strides=strides, weight_decay=weight_decay
        )
    else:
        shortcut = x
    return z, shortcut


# === Model ===


def wide_resnet(
    depth: int = 16,
    width: int = 1,
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    dropout_rate: float = 0.0,
    name: str | None = None,
    weight_decay: float = 0.0,
) -> keras.Model:
    """WRN-depth-width for CIFAR, layer for layer the authors' PyTorch model; returns logits.

    A 3x3 convolution to 16 channels, then three groups of `n = (depth - 4) // 6`
    pre-activation basic blocks of widths `16 * width`, `32 * width`, `64 * width` at strides
    1, 2, 2, then BN-ReLU, global average pooling and a linear classifier. A block computes
    `o1 = relu(bn(x))`, `z = conv3x3(relu(bn(conv3x3(o1, stride))))` and returns `z + x`, or
    `z + conv1x1(o1, stride)` when the channel count changes. The last block's `Add` of each
    group is the layer named `group0`, `group1`, `group2`: the raw group output that attention
    transfer reads. Parameters (BN moving statistics included, as the authors counted):
    WRN-16-1 0.175M, WRN-16-2 0.69M, WRN-40-1 0.56M, WRN-40-2 2.2M.

    Convolutions have no bias; conv and dense kernels are He normal (fan_in, untruncated, as
    `torch.nn.init.kaiming_normal_`), BN scales U(0, 1) as Torch's BN, and stride-2 3x3
    convolutions pad one pixel on every side, as Torch's `padding=1`. Under a mixed dtype
    policy (`keras.mixed_precision.set_global_policy("mixed_bfloat16")`) the classifier
    computes in float32: the logits are float32.

    Args:
        depth: total depth, `6 * n + 4` (16, 22, 28, 40, ...).
        width: widening factor k, an integer >= 1.
        num_classes: number of logits.
        input_shape: `(H, W, C)` of one image.
        dropout_rate: dropout between the two convolutions of every block (0 disables it).
        name: model name; defaults to `"wrn-{depth}-{width}"`.
        weight_decay: coupled L2 decay as in Torch's `SGD(weight_decay=wd)`: every parameter
            (conv and dense kernels, dense bias, BN scale and shift) carries a
            `keras.regularizers.L2(wd / 2)` penalty, whose gradient `wd * w` joins the loss
            gradient before momentum. This is not `keras.optimizers.SGD(weight_decay=wd)`,
            which decays weights separately from the gradient (decoupled, as in AdamW). The
            penalties are in `model.losses`; use one or the other, not both.

    Example:

    ```python
    student = keras_at.models.wide_resnet(depth=16, width=1, weight_decay=5e-4)
    teacher = keras_at.models.wide_resnet(depth=16, width=2)
    student.get_layer("group1").output.shape  # (None, 16, 16, 32)
    ```
    """
    check_int(depth, "depth", minimum=10)
    if (depth - 4) % 6:
        raise ValueError(
            f"`depth` must be of the form 6 * n + 4 (16, 22, 28, 40, ...), got depth={depth}."
        )
    check_int(width, "width")
    check_int(num_classes, "num_classes")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"`dropout_rate` must be in [0, 1), got dropout_rate={dropout_rate!r}.")
    weight_decay = check_weight_decay(weight_decay)
    n = (depth - 4) // 6

    inputs = keras.Input(shape=input_shape, name="image")
    x = conv2d(inputs, 16, 3, "conv0", weight_decay=weight_decay)
    for g, (filters, strides) in enumerate(zip((16, 32, 64), (1, 2, 2), strict=True)):
        for b in range(n):
            z, shortcut = _block(
                x,
                filters * width,
                strides if b == 0 else 1,
                dropout_rate,
                weight_decay,
                name=f"group{g}_block{b}",
            )
            add_name = f"group{g}" if b == n - 1 else f"group{g}_block{b}_add"
            x = keras.layers.Add(name=add_name)([z, shortcut])
    x = batch_norm(x, "bn", weight_decay)
    x = keras.layers.Activation("relu", name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = dense(x, num_classes, "logits", weight_decay)
    return keras.Model(inputs, logits, name=name or f"wrn-{depth}-{width}")
