"""Taps inside nested models and transformer tokens on the JAX backend.

keras-hub imports TensorFlow where it is installed, so these networks are Keras's own:
functional models nested in functional models, and a functional ViT (tests/nested_models.py).
About 40 s of CPU (two minutes on two shared cores), mostly XLA compiles.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import tiny_net  # noqa: E402
from nested_models import classifier, cnn, functional_vit  # noqa: E402

import keras_at  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="needs KERAS_BACKEND=jax")


def fit(distiller, epochs=1):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 5, size=16)
    distiller.compile(optimizer=keras.optimizers.Adam(0.01))
    return distiller.fit(x, y, batch_size=8, epochs=epochs, verbose=0).history


def test_nested_networks_pair_by_path_and_update_only_the_students_statistics():
    student = classifier(cnn(4, "s_net"), name="student")
    teacher = classifier(cnn(8, "t_net"), name="teacher")
    s_bn, t_bn = student.layers[1].get_layer("bn0"), teacher.layers[1].get_layer("bn0")
    s_stats, t_stats = (np.array(bn.moving_mean.value) for bn in (s_bn, t_bn))
    distiller = keras_at.Distiller(student, teacher, hint_beta=1.0)
    assert distiller.pairs == [("s_net/stage0", "t_net/stage0"), ("s_net/stage1", "t_net/stage1")]
    history = fit(distiller)
    assert np.isfinite(history["at_loss"][0]) and history["at_loss"][0] > 0
    assert np.isfinite(history["hint_loss"][0])
    assert not np.allclose(np.array(s_bn.moving_mean.value), s_stats)
    np.testing.assert_array_equal(np.array(t_bn.moving_mean.value), t_stats)


def test_functional_vit_and_cnn_train_both_ways():
    vit = functional_vit("vit")
    # CNN -> ViT: the ViT's last block, tokens on its 4x4 grid, with the CNN's nearest (8x8).
    distiller = keras_at.Distiller(vit, tiny_net(8, "cnn"))
    assert distiller.pairs == [("block1", "group1")]
    history = fit(distiller, epochs=3)
    assert np.isfinite(history["at_loss"]).all()
    assert history["at_loss"][-1] < history["at_loss"][0]
    # ViT -> CNN.
    history = fit(keras_at.Distiller(tiny_net(4, "student"), vit), epochs=3)
    assert np.isfinite(history["at_loss"]).all() and history["at_loss"][0] > 0
    assert history["at_loss"][-1] < history["at_loss"][0]
