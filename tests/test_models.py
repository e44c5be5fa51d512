"""keras_at.models: sizes from the paper, group taps, init, weight decay, validation, saving."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_at.models import nin, resnet, wide_resnet

# One ResNet-18 for every ResNet test: building it imports keras-cv and traces the graph twice.
RESNET_KW = dict(depth=18, num_classes=7, input_shape=(64, 64, 3), weight_decay=1e-4)


@pytest.fixture(scope="module")
def resnet18():
    return resnet(**RESNET_KW)


def _build(family, resnet18):
    """The small instance of each family the shape/saving tests share."""
    if family == "wrn":
        return wide_resnet(16, 1, num_classes=7), (32, 32)
    if family == "nin":
        return nin("thin", num_classes=7), (32, 32)
    if family == "nin-nobn":
        return nin("thin", num_classes=7, batch_norm=False), (32, 32)
    return resnet18, (64, 64)


FAMILIES = ["wrn", "nin", "nin-nobn", "resnet"]


# === Sizes ===


@pytest.mark.parametrize(
    "build, expected, rel",
    [
        (lambda: wide_resnet(16, 1), 0.175e6, 0.02),
        (lambda: wide_resnet(16, 2), 0.69e6, 0.02),
        (lambda: wide_resnet(40, 1), 0.56e6, 0.02),
        (lambda: wide_resnet(40, 2), 2.2e6, 0.03),
        (lambda: nin("thin"), 0.2e6, 0.06),
        (lambda: nin("wide"), 1.0e6, 0.03),
        (lambda: nin("thin", batch_norm=False), 0.2e6, 0.06),
        (lambda: nin("wide", batch_norm=False), 1.0e6, 0.03),
    ],
    ids=[
        "wrn-16-1",
        "wrn-16-2",
        "wrn-40-1",
        "wrn-40-2",
        "nin-thin",
        "nin-wide",
        "nin-thin-nobn",
        "nin-wide-nobn",
    ],
)
def test_parameter_counts_match_the_paper(build, expected, rel):
    assert build().count_params() == pytest.approx(expected, rel=rel)


@pytest.mark.parametrize("depth, expected", [(18, 11_689_512), (34, 21_797_672)])
def test_resnet_trainable_parameters_equal_torchvision(depth, expected):
    # Parameter counts do not depend on the input size: build small.
    model = resnet(depth, num_classes=1000, input_shape=(64, 64, 3))
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == expected


# === Outputs and group taps ===


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_shape(family, resnet18):
    model, (h, w) = _build(family, resnet18)
    x = np.random.default_rng(0).normal(size=(2, h, w, 3)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 7)
    assert np.all(np.isfinite(y))


@pytest.mark.parametrize(
    "family, sizes",
    [
        ("wrn", [32, 16, 8]),
        ("nin", [32, 16, 8]),
        ("nin-nobn", [32, 16, 8]),
        ("resnet", [16, 8, 4, 2]),
    ],
)
def test_group_layers_are_named_and_downsample(family, sizes, resnet18):
    model, _ = _build(family, resnet18)
    names = sorted(
        layer.name
        for layer in model.layers
        if layer.name.startswith("group") and layer.name[5:].isdigit()
    )
    assert names == [f"group{i}" for i in range(len(sizes))]
    for i, size in enumerate(sizes):
        shape = model.get_layer(f"group{i}").output.shape
        assert len(shape) == 4 and tuple(shape[1:3]) == (size, size)


@pytest.mark.parametrize("width", [1, 2])
def test_wrn_groups_are_the_residual_add(width):
    model = wide_resnet(16, width)
    for i, channels in enumerate((16, 32, 64)):
        layer = model.get_layer(f"group{i}")
        assert isinstance(layer, keras.layers.Add)
        assert layer.output.shape[-1] == channels * width
    # The 1x1 projection exists exactly where the channel count changes.
    names = {layer.name for layer in model.layers}
    assert ("group0_block0_convdim" in names) == (width > 1)
    assert "group1_block0_convdim" in names and "group1_block1_convdim" not in names
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert not any(conv.use_bias for conv in convs)


def test_wrn_stride2_conv_pads_like_torch():
    model = wide_resnet(16, 1)
    conv = model.get_layer("group1_block0_conv0")
    sub = keras.Model(model.get_layer("group1_block0_relu0").output, conv.output)
    x = tf.random.normal((1, 32, 32, 16))
    torch_like = tf.nn.conv2d(x, conv.kernel, strides=2, padding=[[0, 0], [1, 1], [1, 1], [0, 0]])
    np.testing.assert_allclose(sub(x).numpy(), torch_like.numpy(), atol=1e-5)


def test_wrn_dropout_sits_between_the_convolutions():
    model = wide_resnet(16, 1, dropout_rate=0.5)
    dropout = model.get_layer("group0_block0_dropout")
    assert dropout.input is model.get_layer("group0_block0_relu1").output
    assert model.get_layer("group0_block0_conv1").input is dropout.output
    x = np.ones((2, 32, 32, 3), "float32")
    assert not np.allclose(model(x, training=True), model(x, training=False))


def test_nin_without_bn_has_no_relu_before_pooling():
    model = nin("thin", batch_norm=False)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    for g in (0, 1):
        group = model.get_layer(f"group{g}")
        assert isinstance(group, keras.layers.Conv2D) and group.use_bias
        assert group.get_config()["activation"] == "linear"
        assert model.get_layer(f"pool{g}").input is group.output
    # Every other convolution is followed by a ReLU.
    relus = [layer for layer in model.layers if isinstance(layer, keras.layers.Activation)]
    assert len(relus) == 9 - 2


def test_nin_with_bn_is_conv_bn_relu():
    model = nin("thin")
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 9
    for g in range(3):
        group = model.get_layer(f"group{g}")
        assert isinstance(group, keras.layers.Activation)
        assert group.input is model.get_layer(f"group{g}_bn2").output


def test_resnet_groups_end_their_stage(resnet18):
    for i, channels in enumerate((64, 128, 256, 512)):
        layer = resnet18.get_layer(f"group{i}")
        assert isinstance(layer, keras.layers.Activation)
        assert layer.output.shape[-1] == channels
        # The ReLU right after the stage's last residual addition (ResNet-18: 2 blocks a stage).
        assert layer.input is resnet18.get_layer(f"v2_stack_{i}_block2_add").output


def test_default_names():
    assert wide_resnet(16, 2).name == "wrn-16-2"
    assert nin("wide").name == "nin-wide"
    assert nin("thin", batch_norm=False, name="student").name == "student"


# === Validation ===


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: wide_resnet(depth=15), r"6 \* n \+ 4.*depth=15"),
        (lambda: wide_resnet(depth=4), "depth"),
        (lambda: wide_resnet(width=0), "width=0"),
        (lambda: wide_resnet(width=1.5), "width=1.5"),
        (lambda: wide_resnet(dropout_rate=1.0), "dropout_rate"),
        (lambda: wide_resnet(num_classes=0), "num_classes"),
        (lambda: wide_resnet(weight_decay=-1e-4), "weight_decay"),
        (lambda: nin("medium"), r"'medium'.*\['thin', 'wide'\]"),
        (lambda: resnet(50), r"\[18, 34\].*depth=50"),
    ],
)
def test_bad_arguments_raise_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_importing_models_does_not_import_keras_cv():
    code = "import sys, keras_at.models; sys.exit('keras_cv' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


# === Initialisation ===


@pytest.mark.parametrize(
    "build, layer, fan",
    [
        (lambda: wide_resnet(16, 2), "group2_block1_conv1", "in"),
        (lambda: nin("wide"), "group1_conv0", "in"),
        (None, "v2_stack_2_block1_0_conv", "out"),  # fb.resnet.torch: fan_out; 1x1, 128 -> 256
    ],
    ids=["wrn", "nin", "resnet"],
)
def test_kernels_are_untruncated_he_normal(build, layer, fan, resnet18):
    model = build() if build else resnet18
    kernel = model.get_layer(layer).kernel.numpy()
    receptive = kernel.shape[0] * kernel.shape[1]
    fan_size = receptive * (kernel.shape[2] if fan == "in" else kernel.shape[3])
    std = np.sqrt(2.0 / fan_size)
    assert kernel.std() == pytest.approx(std, rel=0.03)
    assert abs(kernel.mean()) < 0.05 * std
    # Glorot would be ~sqrt(1 / fan) here; a 2-sigma truncated normal has no tail past 2 std.
    assert np.abs(kernel).max() > 3 * std


def test_dense_kernel_is_he_normal_and_bn_scale_is_torch_uniform():
    model = wide_resnet(16, 4, num_classes=100)
    kernel = model.get_layer("logits").kernel.numpy()  # 256 x 100
    assert kernel.std() == pytest.approx(np.sqrt(2.0 / 256), rel=0.05)
    gamma = np.concatenate(
        [
            layer.gamma.numpy()
            for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)
        ]
    )
    assert gamma.min() >= 0.0 and gamma.max() <= 1.0
    assert gamma.mean() == pytest.approx(0.5, abs=0.05)


# === Weight decay ===


@pytest.mark.parametrize("family", ["wrn", "nin", "resnet"])
def test_weight_decay_is_coupled_l2_on_every_parameter(family, resnet18):
    wd = 1e-4
    if family == "wrn":
        model = wide_resnet(16, 1, weight_decay=wd)
    elif family == "nin":
        model = nin("thin", batch_norm=False, weight_decay=wd)
    else:
        model = resnet18  # built with weight_decay=RESNET_KW["weight_decay"]
        assert RESNET_KW["weight_decay"] == wd
    weights = model.trainable_weights
    assert len(model.losses) == len(weights)
    expected = wd / 2 * sum(float(np.sum(w.numpy() ** 2)) for w in weights)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-4)
    # Coupled decay: the penalty's gradient is wd * w, for kernels, biases, BN scale and shift.
    with tf.GradientTape() as tape:
        penalty = tf.add_n(model.losses)
    grads = tape.gradient(penalty, weights)
    for w, g in zip(weights, grads, strict=True):
        np.testing.assert_allclose(g.numpy(), wd * w.numpy(), rtol=1e-4, atol=1e-10)


def test_no_weight_decay_no_losses():
    assert wide_resnet(16, 1).losses == []
    assert nin("thin").losses == []


# === Saving ===


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_in_safe_mode(family, resnet18, tmp_path):
    model, (h, w) = _build(family, resnet18)
    x = np.random.default_rng(1).normal(size=(2, h, w, 3)).astype("float32")
    expected = model.predict(x, verbose=0)
    path = tmp_path / f"{family}.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    assert [loaded.get_layer(f"group{i}").output.shape for i in range(3)] == [
        model.get_layer(f"group{i}").output.shape for i in range(3)
    ]
    assert len(loaded.losses) == len(model.losses)
