"""`keras_at.models.load_authors_resnet` against an independent forward of the authors' formats.

PyTorch is not a dependency, so the reference is the authors' functional definition
(functional-zoo's resnet-34-export / resnet-18-at-export notebooks, attention-transfer's
imagenet.py) written again here in NumPy, channels-first, in float64: Torch's convolution
padding, max-pooling padded with -inf, the 7x7 average pool at 224. The weights are random
arrays in the exported layouts; the released files cannot be downloaded in tests.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from test_examples import example

from keras_at import models

WIDTHS = (64, 128, 256, 512)
BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


# === Weights in the exported layouts ===


def random_params(depth=18, layout="folded", num_classes=10, seed=0, shortcut_bias=True):
    """A dict of float32 arrays keyed and shaped as the authors' export of `layout`."""
    rng = np.random.default_rng(seed)
    folded = layout == "folded"
    params = {}

    def conv(name, out_channels, in_channels, size, bias=folded):
        fan_in = in_channels * size * size
        weight = rng.normal(0, np.sqrt(1 / fan_in), (out_channels, in_channels, size, size))
        params[f"{name}.weight" if folded else name] = weight
        if bias:
            params[f"{name}.bias"] = rng.normal(0, 0.1, out_channels)

    def affine(name, channels):
        if not folded:
            params[f"{name}.a"] = rng.uniform(0.5, 1.5, channels)
            params[f"{name}.b"] = rng.normal(0, 0.1, channels)

    conv("conv0", 64, 3, 7)
    affine("affine0", 64)
    for group, count in enumerate(BLOCKS[depth]):
        width, group_input = WIDTHS[group], WIDTHS[max(group - 1, 0)]
        for block in range(count):
            base = f"group{group}.block{block}"
            block_input = group_input if block == 0 else width
            if (group, block) != (0, 0):
                affine(f"{base}.affine0", block_input)
            conv(f"{base}.conv0", width, block_input, 3)
            affine(f"{base}.affine1", width)
            conv(f"{base}.conv1", width, width, 3)
            if block == 0 and group > 0:
                conv(f"{base}.conv_dim", width, group_input, 1, bias=folded and shortcut_bias)
    affine("affine_last", 512)
    params["fc.weight"] = rng.normal(0, np.sqrt(1 / 512), (num_classes, 512))
    params["fc.bias"] = rng.normal(0, 0.1, num_classes)
    return {key: value.astype(np.float32) for key, value in params.items()}


# === The authors' forward, in NumPy (NCHW) ===


def conv2d(x, weight, bias=None, stride=1, padding=0):
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = sliding_window_view(x, weight.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    out = np.einsum("nchwij,ocij->nohw", windows, weight.astype(np.float64), optimize=True)
    return out if bias is None else out + bias[None, :, None, None]


def max_pool2d(x, size, stride, padding):
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)),
               constant_values=-np.inf)
    return sliding_window_view(x, (size, size), axis=(2, 3))[:, :, ::stride, ::stride].max(
        axis=(-2, -1))


def relu(x):
    return np.maximum(x, 0)


def average_pool(x):
    """The authors' avg_pool2d(7) where the map is 7x7 (224 inputs); the global mean elsewhere,
    as `load_authors_resnet` documents."""
    if x.shape[2:] == (7, 7):
        return sliding_window_view(x, (7, 7), axis=(2, 3)).mean(axis=(-2, -1))[:, :, 0, 0]
    return x.mean(axis=(2, 3))


def folded_forward(params, x):
    """functional-zoo's resnet-34-export definition: logits and the four group outputs."""
    blocks = [sum(re.match(rf"group{j}\.block\d+\.conv0\.weight$", k) is not None
                  for k in params) for j in range(4)]

    def conv(x, base, stride=1, padding=0):
        return conv2d(x, params[base + ".weight"], params.get(base + ".bias"), stride, padding)

    def group(o, base, stride, n):
        for i in range(n):
            b_base = f"{base}.block{i}.conv"
            x = o
            o = relu(conv(x, b_base + "0", stride if i == 0 else 1, 1))
            o = conv(o, b_base + "1", 1, 1)
            o = o + (conv(x, b_base + "_dim", stride) if i == 0 and stride != 1 else x)
            o = relu(o)
        return o

    o = relu(conv(x, "conv0", 2, 3))
    o = max_pool2d(o, 3, 2, 1)
    groups = []
    for j, stride in enumerate((1, 2, 2, 2)):
        o = group(o, f"group{j}", stride, blocks[j])
        groups.append(o)
    logits = average_pool(o) @ params["fc.weight"].T.astype(np.float64) + params["fc.bias"]
    return logits, groups


def preact_forward(params, x):
    """functional-zoo's resnet-18-at-export definition, for any number of blocks per group."""
    blocks = [sum(re.match(rf"group{j}\.block\d+\.conv0$", k) is not None for k in params)
              for j in range(4)]

    def affine(x, base):
        return x * params[base + ".a"][None, :, None, None] + params[base + ".b"][None, :, None,
                                                                                   None]

    def group(o, base, stride, n):
        for i in range(n):
            b = f"{base}.block{i}."
            if i == 0 and base == "group0":
                x = o
                o = conv2d(x, params[b + "conv0"], padding=1)
                o = relu(affine(o, b + "affine1"))
                o = conv2d(o, params[b + "conv1"], padding=1) + x
            elif i == 0:
                x = relu(affine(o, b + "affine0"))
                o = conv2d(x, params[b + "conv0"], padding=1, stride=stride)
                o = relu(affine(o, b + "affine1"))
                o = conv2d(o, params[b + "conv1"], padding=1)
                o = o + conv2d(x, params[b + "conv_dim"], stride=stride)
            else:
                x = o
                o = relu(affine(x, b + "affine0"))
                o = conv2d(o, params[b + "conv0"], padding=1)
                o = relu(affine(o, b + "affine1"))
                o = conv2d(o, params[b + "conv1"], padding=1) + x
        return o

    o = conv2d(x, params["conv0"], stride=2, padding=3)
    o = relu(affine(o, "affine0"))
    o = max_pool2d(o, 3, 2, 1)
    groups = []
    for j, stride in enumerate((1, 2, 2, 2)):
        o = group(o, f"group{j}", stride, blocks[j])
        groups.append(o)
    o = relu(affine(o, "affine_last"))
    logits = average_pool(o) @ params["fc.weight"].T.astype(np.float64) + params["fc.bias"]
    return logits, groups


def reference(params, images_nhwc):
    forward = folded_forward if "conv0.weight" in params else preact_forward
    return forward(params, np.transpose(images_nhwc, (0, 3, 1, 2)).astype(np.float64))


def assert_close(got, want):
    """float32 round-off of a deep network: relative to the size of the values compared."""
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def group_outputs(model, images):
    taps = keras.Model(model.input, [model.get_layer(f"group{g}").output for g in range(4)])
    return [np.asarray(t) for t in taps(images, training=False)]


# === The model equals the authors' forward ===


@pytest.mark.parametrize(
    "depth, layout, size",
    [(18, "folded", 64), (18, "pre-activation", 64),
     pytest.param(34, "folded", 48, marks=pytest.mark.slow),  # ResNet-34s
     pytest.param(34, "pre-activation", 50, marks=pytest.mark.slow)],
)
def test_logits_and_group_outputs_equal_the_authors_forward(depth, layout, size):
    # ~2 s each. Even sizes are where Torch's stride-2 padding and Keras's "same" differ.
    params = random_params(depth, layout)
    model = models.load_authors_resnet(params, input_shape=(size, size, 3))
    images = np.random.default_rng(1).normal(size=(2, size, size, 3)).astype(np.float32)
    logits, groups = reference(params, images)
    assert model.name == ("authors_resnet" if layout == "folded" else "authors_preact_resnet") + (
        str(depth))
    assert_close(np.asarray(model(images, training=False)), logits)
    for got, want in zip(group_outputs(model, images), groups, strict=True):
        assert_close(got, np.transpose(want, (0, 2, 3, 1)))
    assert model.count_params() == sum(v.size for v in params.values())


@pytest.mark.slow  # ImageNet-size inputs
def test_resnet18_at_224_equals_the_authors_forward_with_their_7x7_average_pool():
    # ~5 s: the authors' input size, where their avg_pool2d(7) sees the whole 7x7 map.
    params = random_params(18, "folded", num_classes=1000, seed=3)
    model = models.load_authors_resnet(params)
    images = np.random.default_rng(4).normal(size=(1, 224, 224, 3)).astype(np.float32)
    logits, groups = reference(params, images)
    assert groups[3].shape == (1, 512, 7, 7)
    assert_close(np.asarray(model(images, training=False)), logits)


def test_a_strided_shortcut_without_bias_as_in_the_authors_imagenet_py():
    # attention-transfer's imagenet.py teacher adds conv_dim without its bias: a dict without
    # the key gives that forward (and a different one from the file's with the bias).
    with_bias = random_params(18, "folded", seed=5)
    without = {k: v for k, v in with_bias.items() if not k.endswith("conv_dim.bias")}
    assert len(with_bias) - len(without) == 3
    images = np.random.default_rng(6).normal(size=(1, 32, 32, 3)).astype(np.float32)
    model = models.load_authors_resnet(without, input_shape=(32, 32, 3))
    logits = np.asarray(model(images, training=False))
    assert_close(logits, reference(without, images)[0])
    assert not np.allclose(logits, reference(with_bias, images)[0], rtol=1e-3)


@pytest.mark.slow
def test_groups_pair_by_name_with_keras_at_resnet18_and_the_model_saves(tmp_path):
    # ~10 s (the keras-cv ResNet-18 is most of it).
    import keras_at

    teacher = models.load_authors_resnet(random_params(18, "pre-activation"), (32, 32, 3))
    student = models.resnet(18, num_classes=10, input_shape=(32, 32, 3))
    distiller = keras_at.Distiller(student, teacher)
    assert distiller.pairs == [(f"group{g}", f"group{g}") for g in range(4)]
    images = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32)
    maps = distiller.attention_maps(images)
    assert [m[1].shape for m in maps.values()] == [(2, 8, 8), (2, 4, 4), (2, 2, 2), (2, 1, 1)]
    # Core Keras layers only: the saved file loads without keras-at's custom objects.
    teacher.save(tmp_path / "teacher.keras")
    loaded = keras.saving.load_model(tmp_path / "teacher.keras", compile=False)
    assert not [layer for layer in loaded.layers
                if not type(layer).__module__.startswith("keras.")]
    np.testing.assert_array_equal(loaded.predict_on_batch(images),
                                  teacher.predict_on_batch(images))


def test_variable_input_size_pools_globally():
    params = random_params(18, "pre-activation", seed=7)
    model = models.load_authors_resnet(params, input_shape=(None, None, 3))
    for size in (33, 40):
        images = np.random.default_rng(size).normal(size=(1, size, size, 3)).astype(np.float32)
        assert_close(np.asarray(model(images, training=False)), reference(params, images)[0])


# === What it reads ===


class TensorLike:
    """What load_authors_resnet reads from a PyTorch tensor: detach().cpu().numpy()."""

    def __init__(self, array):
        self.array = array

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.array


def test_reads_tensors_by_their_methods_and_npz_files(tmp_path):
    params = random_params(18, "folded", seed=8)
    images = np.random.default_rng(9).normal(size=(1, 32, 32, 3)).astype(np.float32)
    want = reference(params, images)[0]
    tensors = {k: TensorLike(v.astype(np.float64)) for k, v in params.items()}
    np.savez(tmp_path / "weights.npz", **params)
    for source in (tensors, tmp_path / "weights.npz"):
        model = models.load_authors_resnet(source, input_shape=(32, 32, 3))
        assert_close(np.asarray(model(images, training=False)), want)


def test_a_pth_file_needs_pytorch_and_the_message_says_how_to_make_an_npz(tmp_path):
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("PyTorch is installed: .pth files are read")
    path = tmp_path / "resnet-34-export.pth"
    path.write_bytes(b"not read")
    needs = r"(?s)needs PyTorch.*numpy\.savez.*resnet-34-export\.npz"
    with pytest.raises(ImportError, match=needs):
        models.load_authors_resnet(path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        models.load_authors_resnet(tmp_path / "missing.pth")


def test_bad_weights_fail_early_naming_the_key():
    params = random_params(18, "folded")
    with pytest.raises(ValueError, match=r"\(2, 2, 2\) blocks per group.*'conv0.weight'"):
        models.load_authors_resnet({k: v for k, v in params.items() if "group3" not in k})
    three = {**params, **{k.replace("block1", "block2"): v for k, v in params.items()
                          if "block1" in k}}
    with pytest.raises(ValueError, match=r"\(3, 3, 3, 3\) blocks per group.*ResNet-34"):
        models.load_authors_resnet(three)
    with pytest.raises(ValueError, match=r"lacks the keys \['group1.block0.conv_dim.weight'\]"):
        models.load_authors_resnet(
            {k: v for k, v in params.items() if k != "group1.block0.conv_dim.weight"})
    with pytest.raises(ValueError, match=r"does not use: \['group0.block0.conv_dim.weight'\]"):
        models.load_authors_resnet(
            {**params, "group0.block0.conv_dim.weight": np.zeros((64, 64, 1, 1))})
    wrong = {**params, "group2.block1.conv0.weight": np.zeros((256, 256, 1, 1))}
    with pytest.raises(ValueError, match=r"'group2.block1.conv0.weight': expected "
                       r"\(256, 256, 3, 3\), got \(256, 256, 1, 1\)"):
        models.load_authors_resnet(wrong)
    with pytest.raises(ValueError, match=r"'fc.bias': expected \(10,\), got \(9,\)"):
        models.load_authors_resnet({**params, "fc.bias": np.zeros(9)})
    with pytest.raises(ValueError, match="neither of the authors' ResNet layouts.*'params'"):
        models.load_authors_resnet({"params": np.zeros(1), "epoch": np.zeros(1)})
    with pytest.raises(ValueError, match="input_shape"):
        models.load_authors_resnet(params, input_shape=(64, 64, 1))
    with pytest.raises(ValueError, match="dict of arrays"):
        models.load_authors_resnet([1, 2])


# === examples/evaluate_imagenet.py and examples/imagenet.py --teacher ===


def write_folder(root, counts):
    """ROOT/<class>/<i>.png, 40x40 noise: a class folder per entry of `counts`."""
    from PIL import Image

    rng = np.random.default_rng(10)
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
                root / name / f"{i}.png")


@pytest.mark.slow  # runs examples/evaluate_imagenet.py twice
def test_evaluate_imagenet_reports_the_single_crop_accuracy_in_sorted_folder_order(
        tmp_path, capsys):
    # ~6 s. Unequal classes, created out of order: a wrong class order changes the accuracy.
    counts = {"n03": 3, "n01": 1, "n02": 4}
    write_folder(tmp_path / "val", counts)
    params = random_params(18, "folded", num_classes=3, seed=11)
    np.savez(tmp_path / "weights.npz", **params)

    # Independently: at --image-size 35 the shorter side becomes round(256 / 224 * 35) = 40,
    # the image's own size, and the central crop starts at (40 - 35) // 2 = 2.
    from PIL import Image

    images, labels = [], []
    for label, name in enumerate(sorted(counts)):
        for i in range(counts[name]):
            pixels = np.asarray(Image.open(tmp_path / "val" / name / f"{i}.png"), np.float64)
            images.append((pixels[2:37, 2:37] / 255 - MEAN) / STD)
            labels.append(label)
    logits = reference(params, np.stack(images))[0]
    labels = np.array(labels)
    top1 = float(np.mean(logits.argmax(axis=1) == labels))
    unsorted = np.repeat(np.arange(3), list(counts.values()))
    assert top1 != float(np.mean(logits.argmax(axis=1) == unsorted))  # the check can fail

    evaluate = example("evaluate_imagenet")
    tiny = ["--image-size", "35", "--batch-size", "3"]
    result = evaluate.main([str(tmp_path), "--authors-weights", str(tmp_path / "weights.npz"),
                            *tiny])
    printed = capsys.readouterr().out
    assert result["images"] == 8 and result["top1"] == pytest.approx(top1)
    assert f"top-1 accuracy {100 * top1:.2f}%, top-5 accuracy 100.00%" in printed
    assert "8 images of" in printed

    # The same numbers from the model saved as .keras, pointed at the class folders directly.
    models.load_authors_resnet(params, (35, 35, 3)).save(tmp_path / "model.keras")
    again = evaluate.main([str(tmp_path / "val"), "--model", str(tmp_path / "model.keras"),
                           *tiny])
    assert again == result


def test_imagenet_teacher_flag_reads_the_authors_weights(tmp_path):
    imagenet = example("imagenet")
    params = random_params(18, "folded", num_classes=1000, seed=12)
    np.savez(tmp_path / "resnet-18-export.npz", **params)
    teacher = imagenet.load_teacher(str(tmp_path / "resnet-18-export.npz"), (32, 32, 3))
    assert teacher.name == "authors_resnet18" and teacher.output.shape == (None, 1000)
    images = np.random.default_rng(13).normal(size=(1, 32, 32, 3)).astype(np.float32)
    assert_close(np.asarray(teacher(images, training=False)), reference(params, images)[0])
    saved = tmp_path / "r18.keras"
    teacher.save(saved)
    assert imagenet.load_teacher(str(saved), (32, 32, 3)).name == "authors_resnet18"
