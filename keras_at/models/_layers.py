"""Building blocks shared by the model families: Torch-faithful init, padding and weight decay.

The reference models of the paper were trained in (Py)Torch. Three Torch habits change what a
Keras model learns and are reproduced here rather than left to Keras defaults:

- kernels drawn from an untruncated He normal (`torch.nn.init.kaiming_normal_`), not Glorot;
- stride-2 convolutions padded symmetrically (`padding=k // 2`), where TensorFlow's "same"
  pads only the bottom/right of an even-sized input and so samples shifted pixels;
- weight decay coupled into the gradient (`SGD(weight_decay=wd)` adds `wd * w` to every
  parameter's gradient), which an L2 penalty of `wd / 2 * sum(w**2)` reproduces exactly;
- BatchNorm's running variance updated with the unbiased batch variance, as Torch does.

That last one comes with TensorFlow's fused batch-norm kernel, which `BatchNorm`
(`batch_norm.py`) uses, in place of Keras's unfused ops (README, "Performance", for what it
gains).
"""

from __future__ import annotations

import keras

from keras_at.models.batch_norm import BatchNorm

# Torch's BatchNorm: running = 0.9 * running + 0.1 * batch, eps = 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
# The layers that compute the logits: float32 under a mixed policy ("mixed_bfloat16",
# "mixed_float16"), as Keras's mixed-precision guide advises, so that the softmax, the losses
# and the exported model read float32 logits. Under the default float32 policy this changes
# nothing: the same layers, names, weights and outputs.
LOGITS_DTYPE = "float32"


# === Initialisers and regularisers ===


def he_normal(mode: str = "fan_in") -> keras.initializers.Initializer:
    """`torch.nn.init.kaiming_normal_(mode=mode)`: N(0, 2 / fan), not truncated."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode=mode, distribution="untruncated_normal"
    )


def torch_bn_gamma() -> keras.initializers.Initializer:
    """Torch (lua `nn`, PyTorch < 1.2, the authors' `bnparams`) drew BN scales from U(0, 1)."""
    return keras.initializers.RandomUniform(0.0, 1.0)


def coupled_l2(weight_decay: float) -> keras.regularizers.Regularizer | None:
    """The penalty whose gradient is `weight_decay * w`, i.e. Torch's coupled SGD decay."""
    return keras.regularizers.L2(weight_decay / 2.0) if weight_decay else None


# === Validation ===


def check_weight_decay(weight_decay: float) -> float:
    if not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise ValueError(f"`weight_decay` must be a number >= 0, got {weight_decay!r}.")
    return float(weight_decay)


# === Layers ===


def conv2d(
    x,
    filters: int,
    kernel_size: int,
    name: str,
    strides: int = 1,
    use_bias: bool = False,
    weight_decay: float = 0.0,
    init_mode: str = "fan_in",
    dtype: str | None = None,
):
    """A Conv2D with Torch's `padding=kernel_size // 2`, He normal init and coupled L2 decay.

    At stride 1 an odd kernel with "same" padding is exactly Torch's symmetric padding. At
    stride 2 it is not (TensorFlow puts the extra row/column at the bottom/right), so the input
    is zero-padded explicitly and the convolution is "valid". `dtype` is the layer's dtype
    policy; `None` is the global one.
    """
    pad = kernel_size // 2
    if strides != 1 and pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    reg = coupled_l2(weight_decay)
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        kernel_initializer=he_normal(init_mode),
        kernel_regularizer=reg,
        bias_regularizer=reg if use_bias else None,
        dtype=dtype,
        name=name,
    )(x)


def batch_norm(x, name: str, weight_decay: float = 0.0):
    """Torch-style BatchNorm: U(0, 1) scale init, Torch momentum/eps/variance, decayed affine."""
    reg = coupled_l2(weight_decay)
    return BatchNorm(
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        gamma_initializer=torch_bn_gamma(),
        gamma_regularizer=reg,
        beta_regularizer=reg,
        name=name,
    )(x)


def dense(x, units: int, name: str, weight_decay: float = 0.0):
    """The classifier: He normal kernel (fan_in), zero bias, both decayed as Torch does.

    It computes in float32 whatever the global dtype policy (`LOGITS_DTYPE`).
    """
    reg = coupled_l2(weight_decay)
    return keras.layers.Dense(
        units,
        kernel_initializer=he_normal("fan_in"),
        kernel_regularizer=reg,
        bias_regularizer=reg,
        dtype=LOGITS_DTYPE,
        name=name,
    )(x)
