"""Network-in-Network (Lin et al., ICLR 2014) for CIFAR, in the two sizes of the AT paper."""

from __future__ import annotations

import keras

from keras_at._argument_checks import check_int
from keras_at.models import _layers
from keras_at.models._layers import LOGITS_DTYPE, check_weight_decay, conv2d

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
    relu_before_pool: bool | None = None,
) -> keras.Model:
    """Network-in-Network for CIFAR ("thin" ~0.2M or "wide" ~1M parameters); returns logits.

    Three groups of a 3x3, a 1x1 and a 1x1 convolution, with 3x3 stride-2 max pooling after
    the first group and 3x3 stride-2 average pooling after the second (as in the original
    NIN), then NIN's classifier: a 1x1 convolution to `num_classes` maps and global average
    pooling. The last layer of each group is named `group0`, `group1`, `group2` (at 1, 1/2
    and 1/4 of the input resolution): the ReLU of the group's last convolution when it has
    one, else that convolution's output (after its BN, with BN).

    With `batch_norm=True` every convolution is conv-BN-ReLU. With `batch_norm=False` it is
    the student of the paper's gradient-based experiments (§4.1.3, Table 3): convolutions with
    bias and no BN, and no ReLU on the convolution that feeds a pooling layer (the last of
    groups 0 and 1), which the paper found trains better without BN. `relu_before_pool`
    overrides that last choice: `nin("wide", relu_before_pool=False)` is the teacher the paper
    trained for its best activation-based AT in Table 3 ("with batch normalization and without
    ReLU activations before pooling layers"), whose `group0` and `group1` are then BN outputs
    of convolutions, as the student's are convolution outputs. `group2` feeds the classifier
    convolution, not a pooling layer, so it keeps its ReLU either way. The parameter count
    does not depend on `relu_before_pool`. Kernels are He normal (fan_in, untruncated, as
    Torch's `kaiming_normal_`); BN scales U(0, 1) as Torch's BN. Under a mixed dtype policy
    the classifier and its pooling compute in float32: the logits are float32.

    Args:
        variant: `"thin"` (group widths 64, 96, 112: 0.21M parameters) or `"wide"`
            (160, 192, 256: 0.99M parameters).
        num_classes: number of logits.
        input_shape: `(H, W, C)` of one image.
        batch_norm: conv-BN-ReLU everywhere if True; no BN and linear pre-pooling convs if False.
        name: model name; defaults to `"nin-{variant}"` (`"nin-{variant}-nobn"` without BN),
            with `"-nopoolrelu"` (BN, `relu_before_pool=False`) or `"-poolrelu"` (no BN,
            `relu_before_pool=True`) appended when `relu_before_pool` departs from the default.
        weight_decay: coupled L2 decay as in Torch's `SGD(weight_decay=wd)`: every parameter
            carries a `keras.regularizers.L2(wd / 2)` penalty (gradient `wd * w` before
            momentum), unlike the decoupled `keras.optimizers.SGD(weight_decay=wd)`.
        relu_before_pool: whether the convolutions that feed the two pooling layers have a
            ReLU; `None` (default) means `batch_norm`: ReLU with BN, none without.

    Example:

    ```python
    student = keras_at.models.nin("thin", batch_norm=False)
    teacher = keras_at.models.nin("wide", batch_norm=False)
    student.get_layer("group0").output.shape  # (None, 32, 32, 64)
    at_teacher = keras_at.models.nin("wide", relu_before_pool=False)  # Table 3's AT teacher
    ```
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown NIN variant {variant!r}; known variants: {sorted(VARIANTS)}.")
    check_int(num_classes, "num_classes")
    weight_decay = check_weight_decay(weight_decay)
    if relu_before_pool is not None and not isinstance(relu_before_pool, bool):
        raise ValueError(
            f"`relu_before_pool` must be True, False or None, got {relu_before_pool!r}."
        )
    use_bn = bool(batch_norm)
    pool_relu = use_bn if relu_before_pool is None else relu_before_pool
    widths = VARIANTS[variant]
    pools = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D, None)

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for g, (filters, pool) in enumerate(zip(widths, pools, strict=True)):
        for i, kernel_size in enumerate((3, 1, 1)):
            last = i == 2
            relu = pool_relu or not (last and pool)
            # `group{g}` names the group's last layer, whichever that is.
            ends_group = last and not relu
            conv_name = f"group{g}" if ends_group and not use_bn else f"group{g}_conv{i}"
            x = conv2d(
                x, filters, kernel_size, conv_name, use_bias=not use_bn, weight_decay=weight_decay
            )
            if use_bn:
                x = _layers.batch_norm(x, f"group{g}" if ends_group else f"group{g}_bn{i}",
                                       weight_decay)
            if relu:
                act_name = f"group{g}" if last else f"group{g}_relu{i}"
                x = keras.layers.Activation("relu", name=act_name)(x)
        if pool:
            x = pool(3, strides=2, padding="same", name=f"pool{g}")(x)
    # The classifier and its pooling in float32 under a mixed policy: the pooling would
    # otherwise cast the classifier's float32 maps back to bfloat16 / float16.
    x = conv2d(x, num_classes, 1, "classifier", use_bias=True, weight_decay=weight_decay,
               dtype=LOGITS_DTYPE)
    logits = keras.layers.GlobalAveragePooling2D(name="logits", dtype=LOGITS_DTYPE)(x)
    default_name = f"nin-{variant}" if use_bn else f"nin-{variant}-nobn"
    if pool_relu != use_bn:
        default_name += "-poolrelu" if pool_relu else "-nopoolrelu"
    return keras.Model(inputs, logits, name=name or default_name)
