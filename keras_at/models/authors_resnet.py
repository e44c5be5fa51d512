"""The authors' released ImageNet ResNets (szagoruyko/functional-zoo exports) as Keras models.

The paper's ImageNet teacher and its attention-transferred student were published as plain
dicts of arrays, one per parameter, read by a functional PyTorch forward. Two layouts exist,
told apart by their keys:

- folded (`resnet-34-export.pth`, `resnet-18-export`, fb.resnet.torch's ResNets): batch norm
  folded into the convolutions, so every convolution has a bias. Keys `conv0.weight/bias`,
  `group{j}.block{i}.conv{0,1}.weight/bias`, `group{j}.block0.conv_dim.weight` (and `.bias` in
  the functional-zoo files) in groups 1-3, `fc.weight/bias`. Post-activation basic blocks:
  `relu(conv1(relu(conv0(x))) + shortcut(x))`, the shortcut a 1x1 stride-2 convolution where
  the group starts, else the identity.
- pre-activation (`resnet-18-at-export`, the AT-trained ResNet-18): each batch norm kept as a
  per-channel affine `x * a + b`. Keys `conv0` (no bias), `affine0.a/b`,
  `group{j}.block{i}.conv{0,1}`, `group{j}.block{i}.affine{0,1}.a/b` (no `affine0` in
  `group0.block0`, whose input the stem already normalised), `group{j}.block0.conv_dim` in
  groups 1-3, `affine_last.a/b`, `fc.weight/bias`. Blocks compute
  `conv1(relu(affine1(conv0(relu(affine0(x)))))) + shortcut`, the strided shortcut reading
  `relu(affine0(x))`, the identity reading `x`.

Both: a 7x7 stride-2 stem with padding 3, ReLU, a 3x3 stride-2 max-pool with padding 1; four
groups of 64, 128, 256, 512 channels, the stride 2 on the first convolution of groups 1-3;
Torch's symmetric padding everywhere; average pooling and a linear classifier.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import keras
import numpy as np

from keras_at.models.resnet import FILTERS, STACKWISE_BLOCKS

FOLDED = "folded"
PRE_ACTIVATION = "pre-activation"
DEPTHS = {tuple(blocks): depth for depth, blocks in STACKWISE_BLOCKS.items()}
_BLOCK_KEY = re.compile(r"group(\d+)\.block(\d+)\.conv0(?:\.weight)?$")
_SHOWN_KEYS = 24  # keys quoted in an error message before "... and N more"


def load_authors_resnet(
    params: Mapping | str | os.PathLike,
    input_shape: tuple[int | None, int | None, int] = (224, 224, 3),
) -> keras.Model:
    """The authors' released ImageNet ResNet-18 or ResNet-34 as a functional Keras model.

    Reads `resnet-34-export.pth` (the paper's ImageNet teacher, top-1/top-5 error 26.7 / 8.7),
    `resnet-18-at-export.pth` (the ResNet-18 trained with attention transfer from it, reported
    as 29.3 / 10.0) or any export of the same layouts (see the module docstring: folded
    post-activation, or pre-activation with per-channel affines). The depth, the layout and the
    number of classes come from the keys and shapes; every array is checked against the
    architecture before anything is built. The logits equal the authors' PyTorch forward to
    float32 round-off.

    The model takes channels-last RGB images normalised as the authors' training and validation
    code normalised them: pixel values scaled to [0, 1], then `(x - mean) / std` per channel
    with mean `(0.485, 0.456, 0.406)` and std `(0.229, 0.224, 0.225)`. That is what
    `keras_at.data.load` yields for an image folder; its evaluation split is their single crop
    (shorter side 256, central 224x224). Class `i` is the `i`-th of the sorted synset folder
    names, as in torchvision's `ImageFolder`.

    The output of each group of residual blocks is a layer named `group0` ... `group3` (the
    ReLU after the last block's addition; in the pre-activation layout the addition itself, as
    the authors' code returns them), so the model pairs by name with
    `keras_at.models.resnet(18)` under `pairs="auto"`. The authors pool with a 7x7 average at
    224x224, where the last map is 7x7; here the pooling is global, the same at 224 and defined
    for other sizes. Layers are core Keras (an affine is a 1x1 `DepthwiseConv2D` with bias), so
    a saved copy loads without keras-at. The functional-zoo folded files also give each
    strided shortcut a bias (`conv_dim.bias`), which their validation code adds; the authors'
    `imagenet.py` teacher leaves it out: drop the key from the dict to get that forward.

    Args:
        params: a dict of arrays keyed as above (NumPy arrays, or PyTorch tensors, converted
            with `.detach().cpu().numpy()`), or the path of a `.pth` file (read with
            `torch.load(path, map_location="cpu")`, which needs PyTorch) or of a `.npz` file
            holding the same arrays (read with NumPy).
        input_shape: `(H, W, 3)` of one image; `None` for a size known only at run time.

    Returns:
        A `keras.Model` from images `(B, H, W, 3)` to logits `(B, num_classes)`, named
        `authors_resnet{depth}` (`authors_preact_resnet{depth}` for the pre-activation layout).

    Raises:
        ValueError: keys of neither layout, a depth other than 18 or 34, a missing or unexpected
            key, or an array of the wrong shape (each named), or a bad `input_shape`.
        ImportError: a `.pth` path without PyTorch installed (the message says how to make a
            `.npz` instead).
        FileNotFoundError: a path that is not a file.

    Example:

    ```python
    teacher = keras_at.models.load_authors_resnet("resnet-34-export.pth")
    student = keras_at.models.resnet(18)
    keras_at.Distiller(student, teacher, pairs=[("group2", "group2"), ("group3", "group3")])
    ```
    """
    arrays = _read(params)
    layout = _layout(arrays)
    blocks = _blocks_per_group(arrays)
    expected = _expected_shapes(layout, blocks, _num_classes(arrays))
    _check_keys_and_shapes(arrays, expected, layout, blocks)
    return _build(arrays, layout, blocks, _check_input_shape(input_shape))


# === Reading ===


def _read(params) -> dict[str, np.ndarray]:
    """`params` (a mapping, or a .pth / .npz path) as a dict of float32 NumPy arrays."""
    if isinstance(params, (str, os.PathLike)):
        params = _read_file(os.fspath(params))
    if not isinstance(params, Mapping):
        raise ValueError(
            "`params` must be a dict of arrays (the authors' exported weights) or the path of "
            f"a .pth or .npz file, got a {type(params).__name__}."
        )
    return {str(key): _as_array(key, value) for key, value in params.items()}


def _read_file(path: str) -> Mapping:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No weights file {path}.")
    if path.lower().endswith(".npz"):
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"Reading {path} needs PyTorch (`torch.load`), which could not be imported ({err}). "
            "Install it (`pip install torch`), or convert the file to .npz once where PyTorch "
            "is installed and pass that instead:\n"
            '  python -c "import sys, numpy, torch; numpy.savez(sys.argv[2], **{k: v.numpy() '
            "for k, v in torch.load(sys.argv[1], map_location='cpu').items()})\" "
            f"{path} {os.path.splitext(path)[0]}.npz"
        ) from err
    return torch.load(path, map_location="cpu")


def _as_array(key, value) -> np.ndarray:
    # PyTorch tensors, recognised by their methods so that torch is never imported for them.
    if all(hasattr(value, name) for name in ("detach", "cpu", "numpy")):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"`params[{key!r}]` must be an array of numbers, got {array.dtype}.")
    return array.astype(np.float32)


def _keys_text(keys) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
    return f"{keys[:_SHOWN_KEYS]}{more}"


# === The layout, the depth, the shapes ===


def _layout(arrays: dict) -> str:
    if "conv0.weight" in arrays:
        return FOLDED
    if "conv0" in arrays and "affine0.a" in arrays:
        return PRE_ACTIVATION
    raise ValueError(
        "`params` is neither of the authors' ResNet layouts: expected 'conv0.weight' (folded, "
        "as resnet-34-export.pth) or 'conv0' and 'affine0.a' (pre-activation, as "
        f"resnet-18-at-export.pth); found the keys {_keys_text(arrays)}."
    )


def _blocks_per_group(arrays: dict) -> tuple[int, ...]:
    """Blocks per group, counted from the `group{j}.block{i}.conv0` keys."""
    counts: dict[int, int] = {}
    for key in arrays:
        match = _BLOCK_KEY.match(key)
        if match:
            group = int(match.group(1))
            counts[group] = counts.get(group, 0) + 1
    blocks = tuple(counts.get(group, 0) for group in range(max(counts, default=-1) + 1))
    if blocks not in DEPTHS:
        wanted = " or ".join(f"{b} (ResNet-{d})" for b, d in DEPTHS.items())
        raise ValueError(
            f"`params` has {blocks} blocks per group (from its group*.block*.conv0 keys); the "
            f"authors' basic-block ResNets have {wanted}. Found the keys {_keys_text(arrays)}."
        )
    return blocks


def _num_classes(arrays: dict) -> int | None:
    weight = arrays.get("fc.weight")
    return weight.shape[0] if weight is not None and weight.ndim == 2 else None


def _expected_shapes(layout: str, blocks: tuple, num_classes: int | None) -> dict:
    """Every key of `layout` at this depth, with its PyTorch (out, in, kh, kw) shape."""
    folded = layout == FOLDED

    def conv(name, out_channels, in_channels, size, bias=folded):
        shapes = {(f"{name}.weight" if folded else name): (out_channels, in_channels, size, size)}
        if bias:
            shapes[f"{name}.bias"] = (out_channels,)
        return shapes

    def affine(name, channels):
        return {} if folded else {f"{name}.a": (channels,), f"{name}.b": (channels,)}

    shapes = {**conv("conv0", FILTERS[0], 3, 7), **affine("affine0", FILTERS[0])}
    for group, count in enumerate(blocks):
        width = FILTERS[group]
        group_input = FILTERS[max(group - 1, 0)]
        for block in range(count):
            base = f"group{group}.block{block}"
            block_input = group_input if block == 0 else width
            if (group, block) != (0, 0):
                shapes.update(affine(f"{base}.affine0", block_input))
            shapes.update(conv(f"{base}.conv0", width, block_input, 3))
            shapes.update(affine(f"{base}.affine1", width))
            shapes.update(conv(f"{base}.conv1", width, width, 3))
            if block == 0 and group > 0:
                shapes.update(conv(f"{base}.conv_dim", width, group_input, 1, bias=False))
    shapes.update(affine("affine_last", FILTERS[-1]))
    shapes["fc.weight"] = (num_classes, FILTERS[-1])
    shapes["fc.bias"] = (num_classes,)
    return shapes


def _optional_keys(layout: str, blocks: tuple) -> dict:
    """The strided shortcuts' biases of the functional-zoo folded files: used when present."""
    if layout != FOLDED:
        return {}
    return {
        f"group{group}.block0.conv_dim.bias": (FILTERS[group],) for group in range(1, len(blocks))
    }


def _check_keys_and_shapes(arrays: dict, expected: dict, layout: str, blocks: tuple) -> None:
    what = f"the authors' {layout} ResNet-{DEPTHS[blocks]}"
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise ValueError(f"`params` lacks the keys {_keys_text(missing)} of {what}.")
    allowed = {**expected, **_optional_keys(layout, blocks)}
    unexpected = sorted(set(arrays) - set(allowed))
    if unexpected:
        raise ValueError(
            f"`params` has keys that {what} does not use: {_keys_text(unexpected)}."
        )
    wrong = [
        f"{key!r}: expected {tuple('num_classes' if s is None else s for s in allowed[key])}, "
        f"got {arrays[key].shape}"
        for key in sorted(arrays)
        if len(arrays[key].shape) != len(allowed[key])
        or any(s is not None and s != g for s, g in zip(allowed[key], arrays[key].shape))
    ]
    if wrong:
        raise ValueError(f"`params` does not fit {what} (PyTorch shapes): " + "; ".join(wrong))


def _check_input_shape(input_shape) -> tuple:
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[-1] != 3 or not all(
        s is None or (isinstance(s, (int, np.integer)) and s > 0) for s in shape[:2]
    ):
        raise ValueError(
            "`input_shape` must be (height, width, 3) of RGB images (sizes may be None), got "
            f"input_shape={input_shape!r}."
        )
    return shape


# === Building ===


def _build(arrays: dict, layout: str, blocks: tuple, input_shape: tuple) -> keras.Model:
    folded = layout == FOLDED

    def conv(x, key, strides=1):
        weight = arrays[f"{key}.weight" if folded else key]
        out_channels, _, size, _ = weight.shape
        bias = arrays.get(f"{key}.bias")
        name = key.replace(".", "_")
        # Torch pads both sides by size // 2; Keras's "same" does too at stride 1 for odd
        # kernels, but at stride 2 it pads an even input at the bottom/right only.
        if strides != 1 and size > 1:
            x = keras.layers.ZeroPadding2D(size // 2, name=f"{name}_pad")(x)
        layer = keras.layers.Conv2D(
            out_channels,
            size,
            strides=strides,
            padding="same" if strides == 1 else "valid",
            use_bias=bias is not None,
            name=name,
        )
        x = layer(x)
        kernel = np.transpose(weight, (2, 3, 1, 0))  # (out, in, kh, kw) -> (kh, kw, in, out)
        layer.set_weights([kernel] if bias is None else [kernel, bias])
        return x

    def affine(x, key):
        if folded:
            return x
        scale, shift = arrays[f"{key}.a"], arrays[f"{key}.b"]
        layer = keras.layers.DepthwiseConv2D(1, use_bias=True, name=key.replace(".", "_"))
        x = layer(x)
        layer.set_weights([scale.reshape(1, 1, -1, 1), shift])
        return x

    def relu(x, name):
        return keras.layers.ReLU(name=name)(x)

    image = keras.Input(shape=input_shape, name="image")
    x = relu(affine(conv(image, "conv0", strides=2), "affine0"), "conv0_relu")
    # Torch pads max-pooling with -inf; zeros are the same here, as the input is a ReLU's.
    x = keras.layers.ZeroPadding2D(1, name="pool0_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool0")(x)
    for group, count in enumerate(blocks):
        for block in range(count):
            base = f"group{group}.block{block}"
            name = base.replace(".", "_")
            last = block == count - 1
            strides = 2 if block == 0 and group > 0 else 1
            if folded:
                y = relu(conv(x, f"{base}.conv0", strides), f"{name}_relu0")
                y = conv(y, f"{base}.conv1")
                shortcut = conv(x, f"{base}.conv_dim", strides) if strides != 1 else x
                x = keras.layers.Add(name=f"{name}_add")([y, shortcut])
                x = relu(x, f"group{group}" if last else f"{name}_relu")
            else:
                # group0.block0 reads the stem's output, which is normalised already.
                normalised = x if (group, block) == (0, 0) else relu(
                    affine(x, f"{base}.affine0"), f"{name}_relu0"
                )
                y = conv(normalised, f"{base}.conv0", strides)
                y = relu(affine(y, f"{base}.affine1"), f"{name}_relu1")
                y = conv(y, f"{base}.conv1")
                shortcut = conv(normalised, f"{base}.conv_dim", strides) if strides != 1 else x
                x = keras.layers.Add(name=f"group{group}" if last else f"{name}_add")(
                    [y, shortcut]
                )
    if not folded:
        x = relu(affine(x, "affine_last"), "affine_last_relu")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    classifier = keras.layers.Dense(arrays["fc.weight"].shape[0], name="logits")
    logits = classifier(x)
    classifier.set_weights([arrays["fc.weight"].T, arrays["fc.bias"]])
    depth = DEPTHS[blocks]
    name = f"authors_resnet{depth}" if folded else f"authors_preact_resnet{depth}"
    return keras.Model(image, logits, name=name)
