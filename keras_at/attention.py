"""Eq. 1 of the paper: spatial attention maps of a layer's activations.

An activation tensor A of shape (B, H, W, C) is mapped to a spatial map
F(A) of shape (B, H, W) by a channel-wise statistic of |A_c|^p. Before two
maps are compared (eq. 2) each is flattened per example and l2-normalised;
when the maps have different spatial sizes the teacher's map is resized
(bilinear) to the student's.
"""

from __future__ import annotations

from keras import ops

from keras_at._argument_checks import check_positive

REDUCTIONS = ("sum", "mean", "max")
_EPSILON = 1e-12


def check_attention_args(p: float, reduction: str) -> int | float:
    """`p` as a Python number, or a `ValueError` unless `p > 0` and `reduction` is known."""
    p = check_positive(p, "p")
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"Unknown attention `reduction`={reduction!r}; expected one of {REDUCTIONS}."
        )
    return p


def attention_map(features, p: float = 2, reduction: str = "sum"):
    """Spatial attention map F of the paper, shape `(B, H, W)`, not normalised.

    `reduction="sum"` is F_sum^p = sum_c |A_c|^p (p=1 gives F_sum), `"mean"`
    the same divided by the channel count C, `"max"` is F_max^p =
    max_c |A_c|^p. The map is computed in float32 whatever the input dtype,
    so it is safe under mixed precision.

    Args:
        features: channels-last activations `(B, H, W, C)`.
        p: positive exponent applied to |A_c|.
        reduction: `"sum"`, `"mean"` or `"max"` over channels.

    Returns:
        A float32 tensor `(B, H, W)`.

    Examples:
        >>> import numpy as np, keras_at
        >>> a = np.ones((2, 4, 4, 3), "float32")
        >>> tuple(keras_at.attention_map(a, p=2).shape)
        (2, 4, 4)
    """
    check_attention_args(p, reduction)
    features = ops.convert_to_tensor(features)
    if len(features.shape) != 4:
        raise ValueError(
            "attention_map expects channels-last features of rank 4 (B, H, W, C), "
            f"got shape {tuple(features.shape)}."
        )
    features = ops.cast(features, "float32")
    if p == 2:
        powered = ops.square(features)
    elif float(p).is_integer() and int(p) % 2 == 0:
        powered = ops.power(features, float(p))
    elif p == 1:
        powered = ops.abs(features)
    else:
        powered = ops.power(ops.abs(features), float(p))
    if reduction == "sum":
        return ops.sum(powered, axis=-1)
    if reduction == "mean":
        return ops.mean(powered, axis=-1)
    return ops.max(powered, axis=-1)


def resize_maps(maps, size):
    """Bilinear resize of `(B, H, W)` maps or `(B, H, W, C)` tensors to `size=(H', W')`."""
    if tuple(maps.shape[1:3]) == tuple(size):
        return maps
    if len(maps.shape) == 3:
        return ops.image.resize(maps[..., None], size, interpolation="bilinear")[..., 0]
    return ops.image.resize(maps, size, interpolation="bilinear")


def l2_normalize_flat(tensor):
    """Flattens each example and divides it by its l2 norm (zero stays zero)."""
    flat = ops.reshape(tensor, (ops.shape(tensor)[0], -1))
    norm = ops.sqrt(ops.sum(ops.square(flat), axis=-1, keepdims=True))
    return flat / ops.maximum(norm, _EPSILON)


def normalized_attention(features, p: float = 2, reduction: str = "sum", size=None):
    """The map that eq. 2 compares: `attention_map`, resized to `size`, flattened, l2-normalised.

    Returns a `(B, H*W)` float32 tensor of unit rows.
    """
    maps = attention_map(features, p=p, reduction=reduction)
    if size is not None:
        maps = resize_maps(maps, size)
    return l2_normalize_flat(maps)
