"""Network-in-Network (Lin et al., ICLR 2014) for CIFAR, in the two sizes of the AT paper."""

from __future__ import annotations

import keras

from keras_at.models import _layers
from keras_at.models._layers import check_int, check_weight_decay, conv2d

# Channels of the three groups. Each group is a 3x3, a 1x1 and a 1x1 convolution of that width
# (paper §3.1); the widths grow with depth, as in ResNets, and are chosen for the paper's
# sizes: thin ~0.2M and wide ~1M parameters with a 10-class classifier.
VARIANTS = {
    "thin": (64, 96, 112),
    "wide": (160, 192, 256),
}

# === Model ===


def nin(
    variant: str = "thin",
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    batch_norm: bool = True,
    name: str | None = None,
    weight_decay: float = 0.0,
) -> keras.Model:
    """Network-in-Network for CIFAR ("thin" ~0.2M or "wide" ~1M parameters); returns logits.

    Three groups of a 3x3, a 1x1 and a 1x1 convolution, with 3x3 stride-2 max pooling after
    the first group and 3x3 stride-2 average pooling after the second (as in the original
    NIN), then NIN's classifier: a 1x1 convolution to `num_classes` maps and global average
    pooling. The output of each group's last convolution (after its ReLU, when it has one) is
    the layer named `group0`, `group1`, `group2`, at 1, 1/2 and 1/4 of the input resolution.

    With `batch_norm=True` every convolution is conv-BN-ReLU. With `batch_norm=False` it is
    the student of the paper's gradient-based experiments (§4.1.3, Table 3): convolutions with
    bias and no BN, and no ReLU on the convolution that feeds a pooling layer (the last of
    groups 0 and 1), which the paper found trains better without BN. Kernels are He normal
    (fan_in, untruncated, as Torch's `kaiming_normal_`); BN scales U(0, 1) as Torch's BN.

    Args:
        variant: `"thin"` (group widths 64, 96, 112: 0.21M parameters) or `"wide"`
            (160, 192, 256: 0.99M parameters).
        num_classes: number of logits.
        input_shape: `(H, W, C)` of one image.
        batch_norm: conv-BN-ReLU everywhere if True; no BN and linear pre-pooling convs if False.
        name: model name; defaults to `"nin-{variant}"` (`"nin-{variant}-nobn"` without BN).
        weight_decay: coupled L2 decay as in Torch's `SGD(weight_decay=wd)`: every parameter
            carries a `keras.regularizers.L2(wd / 2)` penalty (gradient `wd * w` before
            momentum), unlike the decoupled `keras.optimizers.SGD(weight_decay=wd)`.

    Example:

    ```python
    student = keras_at.models.nin("thin", batch_norm=False)
    teacher = keras_at.models.nin("wide", batch_norm=False)
    student.get_layer("group0").output.shape  # (None, 32, 32, 64)
    ```
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown NIN variant {variant!r}; known variants: {sorted(VARIANTS)}.")
    check_int(num_classes, "num_classes")
    weight_decay = check_weight_decay(weight_decay)
    use_bn = bool(batch_norm)
    widths = VARIANTS[variant]
    pools = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D, None)

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for g, (filters, pool) in enumerate(zip(widths, pools, strict=True)):
        for i, kernel_size in enumerate((3, 1, 1)):
            last = i == 2
            conv_name = f"group{g}" if last and pool and not use_bn else f"group{g}_conv{i}"
            x = conv2d(
                x, filters, kernel_size, conv_name, use_bias=not use_bn, weight_decay=weight_decay
            )
            if use_bn:
                x = _layers.batch_norm(x, f"group{g}_bn{i}", weight_decay)
            if use_bn or not (last and pool):
                act_name = f"group{g}" if last else f"group{g}_relu{i}"
                x = keras.layers.Activation("relu", name=act_name)(x)
        if pool:
            x = pool(3, strides=2, padding="same", name=f"pool{g}")(x)
    x = conv2d(x, num_classes, 1, "classifier", use_bias=True, weight_decay=weight_decay)
    logits = keras.layers.GlobalAveragePooling2D(name="logits")(x)
    default_name = f"nin-{variant}" if use_bn else f"nin-{variant}-nobn"
    return keras.Model(inputs, logits, name=name or default_name)
