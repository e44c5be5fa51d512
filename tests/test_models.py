"""keras_at.models: sizes from the paper, group taps, init, weight decay, validation, saving,
and ResNets from either keras-cv or keras-hub."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import fit_one_epoch

import keras_at
from keras_at.models import nin, resnet, wide_resnet

# One ResNet-18 per library for every ResNet test: building one imports keras-cv or keras-hub
# and traces the graph twice.
RESNET_KW = dict(depth=18, num_classes=7, input_shape=(64, 64, 3), weight_decay=1e-4)


@pytest.fixture(scope="module")
def resnet18():
    keras.utils.set_random_seed(18)  # the same weights, whichever test builds it
    return resnet(**RESNET_KW)


@pytest.fixture(scope="module")
def resnet18_hub():
    keras.utils.set_random_seed(18)
    return resnet(**RESNET_KW, backbone="keras_hub")


def _build(family, request):
    """The small instance of each family the shape/saving tests share."""
    if family == "wrn":
        return wide_resnet(16, 1, num_classes=7), (32, 32)
    if family == "nin":
        return nin("thin", num_classes=7), (32, 32)
    if family == "nin-nobn":
        return nin("thin", num_classes=7, batch_norm=False), (32, 32)
    fixture = {"resnet": "resnet18", "resnet-hub": "resnet18_hub"}[family]
    return request.getfixturevalue(fixture), (64, 64)


FAMILIES = ["wrn", "nin", "nin-nobn", "resnet", "resnet-hub"]


def keras_cv_backbone(blocks, **overrides):
    """A keras-cv ResNetBackbone as a user builds one (any image size, Glorot init)."""
    import keras_cv

    config = dict(
        stackwise_filters=[64, 128, 256, 512], stackwise_blocks=blocks,
        stackwise_strides=[1, 2, 2, 2], block_type="basic_block", include_rescaling=False,
    )
    return keras_cv.models.ResNetBackbone(**{**config, **overrides})


def keras_hub_backbone(blocks, **overrides):
    """A keras-hub ResNetBackbone as a user builds one (any image size, Glorot init)."""
    import keras_hub

    config = dict(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=blocks,
        stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
    )
    return keras_hub.models.ResNetBackbone(**{**config, **overrides})


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


@pytest.mark.parametrize("backbone", ["keras_cv", "keras_hub"])
@pytest.mark.parametrize("depth, expected", [
    (18, 11_689_512), pytest.param(34, 21_797_672, marks=pytest.mark.slow)])  # a ResNet-34
def test_resnet_trainable_parameters_equal_torchvision(depth, expected, backbone, request):
    # Parameter counts do not depend on the input size: the shared 64x64 models. Their heads
    # have fewer classes than torchvision's 1000: 512 x 1000 weights and 1000 biases there.
    model = request.getfixturevalue(
        f"resnet{depth}" + ("_hub" if backbone == "keras_hub" else ""))
    head = model.get_layer("logits")
    assert head.kernel.shape[0] == 512 and head.bias.shape == (head.kernel.shape[1],)
    backbone_size = sum(int(np.prod(w.shape)) for w in model.trainable_weights
                        if not any(w is v for v in head.trainable_weights))
    assert backbone_size + 512 * 1000 + 1000 == expected


# === Outputs and group taps ===


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_shape(family, request):
    model, (h, w) = _build(family, request)
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
        ("resnet-hub", [16, 8, 4, 2]),
    ],
)
def test_group_layers_are_named_and_downsample(family, sizes, request):
    model, _ = _build(family, request)
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


def _layer_kinds(model):
    return [(layer.name, type(layer).__name__) for layer in model.layers]


def test_nin_without_relu_before_pool_is_table3s_at_teacher():
    """BN, no ReLU on the convolutions feeding the pools: group0/1 are their BN outputs."""
    default = nin("thin", num_classes=7)
    model = nin("thin", num_classes=7, relu_before_pool=False)
    assert model.name == "nin-thin-nopoolrelu"
    assert model.count_params() == default.count_params()
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 9
    assert sum(isinstance(layer, keras.layers.Activation) for layer in model.layers) == 9 - 2
    for g in (0, 1):
        group = model.get_layer(f"group{g}")
        assert isinstance(group, keras.layers.BatchNormalization)
        assert group.input is model.get_layer(f"group{g}_conv2").output
        assert model.get_layer(f"pool{g}").input is group.output
    # group2 feeds the classifier convolution, not a pool: it keeps its ReLU.
    assert isinstance(model.get_layer("group2"), keras.layers.Activation)
    assert model.get_layer("group2").input is model.get_layer("group2_bn2").output

    # With the default model's weights (same order), group0 is the default's pre-ReLU BN
    # output, and the ReLU of it is the default's group0 (later groups see other inputs).
    model.set_weights(default.get_weights())
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    ours = keras.Model(model.input, [model.get_layer(f"group{g}").output for g in (0, 1)])(x)
    theirs = keras.Model(default.input, [default.get_layer(n).output
                                         for n in ("group0_bn2", "group0")])(x)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.maximum(ours[0], 0), theirs[1], rtol=1e-5, atol=1e-5)
    assert all(np.min(o) < 0 for o in ours)  # the check has power: the ReLUs are really gone
    assert not np.allclose(model(x), default(x), atol=1e-3)


def test_nin_relu_before_pool_none_keeps_each_default_and_true_adds_it_without_bn():
    for batch_norm in (True, False):
        default = nin("thin", batch_norm=batch_norm)
        same = nin("thin", batch_norm=batch_norm, relu_before_pool=None if batch_norm else False)
        assert same.name == default.name and _layer_kinds(same) == _layer_kinds(default)
    assert _layer_kinds(nin("thin", relu_before_pool=True)) == _layer_kinds(nin("thin"))
    model = nin("thin", batch_norm=False, relu_before_pool=True)
    assert model.name == "nin-thin-nobn-poolrelu"
    assert model.count_params() == nin("thin", batch_norm=False).count_params()
    for g in (0, 1):
        group = model.get_layer(f"group{g}")
        assert isinstance(group, keras.layers.Activation)
        conv = model.get_layer(f"group{g}_conv2")
        assert group.input is conv.output and conv.use_bias
        assert model.get_layer(f"pool{g}").input is group.output


@pytest.mark.parametrize(
    "fixture, last_add",
    [("resnet18", "v2_stack_{}_block2_add"), ("resnet18_hub", "stack{}_block1_add")],
)
def test_resnet_groups_end_their_stage(fixture, last_add, request):
    model = request.getfixturevalue(fixture)
    for i, channels in enumerate((64, 128, 256, 512)):
        layer = model.get_layer(f"group{i}")
        assert isinstance(layer, keras.layers.Activation)
        assert layer.output.shape[-1] == channels
        # The ReLU right after the stage's last residual addition (ResNet-18: 2 blocks a stage).
        assert layer.input is model.get_layer(last_add.format(i)).output


def test_keras_hub_resnet_pads_stride2_like_torch(resnet18_hub):
    conv = resnet18_hub.get_layer("stack1_block0_1_conv")
    sub = keras.Model(resnet18_hub.get_layer("group0").output, conv.output)
    x = tf.random.normal((1, 16, 16, 64))
    torch_like = tf.nn.conv2d(x, conv.kernel, strides=2, padding=[[0, 0], [1, 1], [1, 1], [0, 0]])
    np.testing.assert_allclose(sub(x).numpy(), torch_like.numpy(), atol=1e-5)


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
        (lambda: nin(relu_before_pool="no"), r"`relu_before_pool`.*'no'"),
        (lambda: resnet(50), r"\[18, 34\].*depth=50"),
        (lambda: resnet(backbone="torch"), r"\['keras_cv', 'keras_hub'\].*'torch'"),
        (lambda: resnet(backbone=wide_resnet(16, 1)), "ResNetBackbone, got a Functional"),
        pytest.param(  # a ResNet-34 backbone
            lambda: resnet(18, backbone=keras_hub_backbone([3, 4, 6, 3])),
            r"not the basic-block ResNet-18.*\[3, 4, 6, 3\].*pass depth=34",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            # keras-cv's bottleneck "block": a ResNet-50.
            lambda: resnet(34, backbone=keras_cv_backbone([3, 4, 6, 3], block_type="block")),
            r"ResNet-34.*'block_type': 'block'.*'basic_block'",
            marks=pytest.mark.slow,
        ),
        (
            lambda: resnet(18, backbone=keras_hub_backbone([2, 2, 2, 2], image_shape=(32, 32, 3))),
            r"\(32, 32, 3\).*input_shape=\(224, 224, 3\)",
        ),
        (
            lambda: resnet(18, backbone=keras_hub_backbone(
                [2, 2, 2, 2], data_format="channels_first", image_shape=(3, None, None)
            )),
            r"'data_format': 'channels_first'.*'channels_last'",
        ),
    ],
)
def test_bad_arguments_raise_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.slow  # a Python process
def test_importing_models_does_not_import_keras_cv_or_keras_hub():
    code = (
        "import sys, keras_at.models; print(sorted({'keras_cv', 'keras_hub'} & set(sys.modules)))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.splitlines()[-1] == "[]"


def test_keras_hub_backbone_without_keras_hub_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # makes `import keras_hub` fail
    with pytest.raises(ImportError, match=r"backbone='keras_hub'.*pip install keras-hub"):
        resnet(18, input_shape=(64, 64, 3), backbone="keras_hub")


# === Initialisation ===


@pytest.mark.parametrize(
    "build, layer, fan",
    [
        (lambda: wide_resnet(16, 2), "group2_block1_conv1", "in"),
        (lambda: nin("wide"), "group1_conv0", "in"),
        ("resnet18", "v2_stack_2_block1_0_conv", "out"),  # fb.resnet.torch: fan_out; 1x1
        ("resnet18_hub", "stack2_block0_0_conv", "out"),  # 128 -> 256
    ],
    ids=["wrn", "nin", "resnet", "resnet-hub"],
)
def test_kernels_are_untruncated_he_normal(build, layer, fan, request):
    model = request.getfixturevalue(build) if isinstance(build, str) else build()
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


@pytest.mark.parametrize("family", ["wrn", "nin", "resnet", "resnet-hub"])
def test_weight_decay_is_coupled_l2_on_every_parameter(family, request):
    wd = 1e-4
    if family == "wrn":
        model = wide_resnet(16, 1, weight_decay=wd)
    elif family == "nin":
        model = nin("thin", batch_norm=False, weight_decay=wd)
    else:
        model, _ = _build(family, request)  # built with weight_decay=RESNET_KW["weight_decay"]
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
def test_save_and_load_in_safe_mode(family, request, tmp_path):
    model, (h, w) = _build(family, request)
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


# === ResNets from keras-cv and keras-hub ===


@pytest.mark.parametrize(
    "student_backbone, teacher_backbone", [("keras_hub", "keras_cv"), ("keras_cv", "keras_hub")]
)
def test_resnet18_student_pairs_with_a_resnet34_teacher_of_the_other_library(
    student_backbone, teacher_backbone, resnet34, resnet34_hub
):
    student = resnet(18, num_classes=2, input_shape=(64, 64, 3), backbone=student_backbone)
    teacher = resnet34_hub if teacher_backbone == "keras_hub" else resnet34
    distiller = keras_at.Distiller(student, teacher)
    assert distiller.pairs == [(f"group{g}", f"group{g}") for g in range(4)]
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    history = fit_one_epoch(distiller, 64, 2)
    assert np.isfinite(history["at_loss"][0]) and history["at_loss"][0] > 0
    for before, after in zip(teacher_weights, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("build_backbone", [keras_cv_backbone, keras_hub_backbone])
def test_a_built_backbone_is_copied_with_its_weights(build_backbone):
    backbone = build_backbone([2, 2, 2, 2])
    names = [layer.name for layer in backbone.layers]
    model = resnet(18, num_classes=3, input_shape=(64, 64, 3), backbone=backbone)
    x = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype("float32")
    group3 = keras.Model(model.input, model.get_layer("group3").output)
    np.testing.assert_allclose(group3(x), backbone(x), rtol=1e-5, atol=1e-5)
    # A copy: the backbone keeps its layers and names, and training the model leaves it alone.
    assert [layer.name for layer in backbone.layers] == names
    assert not {id(w) for w in model.weights} & {id(w) for w in backbone.weights}
