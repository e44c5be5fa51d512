"""The Distiller: real fits, the frozen teacher, live loss weights, validation, saving."""

import keras
import numpy as np
import pytest
from conftest import tiny_net

import keras_at
from keras_at.models import wide_resnet

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def compiled(distiller, lr=0.05):
    distiller.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9), loss=CE,
                      metrics=["accuracy"])
    return distiller


def attention_gap(distiller, x):
    return float(np.mean([np.mean((s - t) ** 2)
                          for s, t in distiller.attention_maps(x).values()]))


def fashion_subset(n):
    """The first n Fashion-MNIST training images from Debian's files, as (x, y)."""
    import gzip
    import os

    root = "/usr/share/datasets/fashion-mnist"
    if not os.path.isdir(root):
        pytest.skip("dataset-fashion-mnist is not installed")
    with gzip.open(f"{root}/train-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16)[: n * 784].reshape(n, 28, 28, 1)
    with gzip.open(f"{root}/train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n].astype("int64")
    return ((x / 255.0 - 0.286) / 0.353).astype("float32"), y


@pytest.mark.slow  # two WRN-16s trained 3 epochs on 256 images
def test_wrn_fit_shrinks_attention_gap_and_never_touches_the_teacher():
    x, y = fashion_subset(256)
    student = wide_resnet(16, 1, input_shape=(28, 28, 1))
    teacher = wide_resnet(16, 2, input_shape=(28, 28, 1))
    distiller = compiled(keras_at.Distiller(student, teacher))
    assert distiller.pairs == [("group0", "group0"), ("group1", "group1"), ("group2", "group2")]
    teacher_before = [w.copy() for w in teacher.get_weights()]  # kernels and BN statistics
    student_before = [w.copy() for w in student.get_weights()]
    gap_before = attention_gap(distiller, x[:64])

    history = distiller.fit(x, y, batch_size=64, epochs=3, verbose=0)

    gap_after = attention_gap(distiller, x[:64])
    assert gap_after < 0.75 * gap_before
    # The same student trained without AT stays further from the teacher's attention.
    baseline = wide_resnet(16, 1, input_shape=(28, 28, 1))
    baseline.set_weights(student_before)
    plain = compiled(keras_at.Distiller(baseline, teacher, beta=0.0))
    plain.fit(x, y, batch_size=64, epochs=3, verbose=0)
    assert gap_after < attention_gap(plain, x[:64])
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert all(not np.array_equal(b, a) for b, a in zip(student_before, student.get_weights())
               if b.size > 1)
    assert {"loss", "task_loss", "at_loss", "accuracy"} <= set(history.history)
    assert not {"kd_loss", "hint_loss", "grad_at_loss"} & set(history.history)
    assert history.history["at_loss"][-1] < history.history["at_loss"][0]


def test_total_is_the_weighted_sum_of_the_terms(tiny_pair, tiny_data):
    x, y = tiny_data
    student, teacher = tiny_pair
    distiller = compiled(keras_at.Distiller(student, teacher, beta=200.0, alpha=0.3,
                                            hint_beta=5.0, temperature=2.0))
    logs = distiller.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    expected = (0.7 * logs["task_loss"] + 0.3 * logs["kd_loss"] + 200.0 * logs["at_loss"]
                + 5.0 * logs["hint_loss"])
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    s_logits, t_logits = student(x, training=False), teacher(x, training=False)
    assert logs["task_loss"] == pytest.approx(float(CE(y, s_logits)), rel=1e-5)
    assert logs["kd_loss"] == pytest.approx(float(keras_at.kd_loss(s_logits, t_logits, 2.0)),
                                            rel=1e-5)


def test_weights_are_live_variables_without_retracing(tiny_pair, tiny_data):
    x, y = tiny_data
    distiller = compiled(keras_at.Distiller(*tiny_pair))
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    train_function = distiller.train_function
    distiller.beta = 0.0
    assert distiller.beta == 0.0
    history = distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert distiller.train_function is train_function
    assert history.history["loss"][0] == pytest.approx(history.history["task_loss"][0], rel=1e-6)
    assert history.history["at_loss"][0] > 0


def test_a_term_switched_on_later_is_traced_in(tiny_pair, tiny_data):
    x, y = tiny_data
    distiller = compiled(keras_at.Distiller(*tiny_pair))
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    distiller.hint_beta = 10.0
    assert "hint_loss" in distiller.active_terms
    history = distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert history.history["hint_loss"][0] > 0
    adapters = [a for a in distiller.hint_adapters if a is not None]
    assert len(adapters) == 2  # 4 -> 8 and 8 -> 16 channels


def test_hint_adapters_carry_coupled_weight_decay_while_f_actt_is_on(tiny_pair, tiny_data):
    x, y = tiny_data
    distiller = compiled(keras_at.Distiller(*tiny_pair, beta=0.0, hint_beta=5.0,
                                            hint_weight_decay=0.5))
    logs = distiller.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    kernels = [a.kernel for a in distiller.hint_adapters if a is not None]
    decay = sum(0.25 * float(np.sum(np.square(k))) for k in kernels)  # L2(0.5 / 2)
    assert decay > 0.01
    assert logs["loss"] == pytest.approx(logs["task_loss"] + 5.0 * logs["hint_loss"] + decay,
                                         rel=1e-5)
    assert distiller.get_config()["hint_weight_decay"] == 0.5
    distiller.hint_beta = 0.0  # adapters unused: their decay leaves the loss too
    logs = distiller.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(logs["task_loss"], rel=1e-6)


def test_pairs_auto_on_residual_nets_without_group_names_picks_the_merge():
    def preact_net(width, name):
        inputs = keras.Input((16, 16, 3))
        x = keras.layers.Conv2D(width, 3, padding="same")(inputs)
        for stride in (1, 2):
            o = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
            y = keras.layers.Conv2D(width, 3, strides=stride, padding="same")(o)
            shortcut = x if stride == 1 else keras.layers.Conv2D(width, 1, strides=2)(o)
            x = keras.layers.Add(name=f"{name}_merge{stride}")([y, shortcut])
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(3)(x), name=name)

    distiller = keras_at.Distiller(preact_net(4, "s"), preact_net(8, "t"))
    assert distiller.pairs == [("s_merge1", "t_merge1"), ("s_merge2", "t_merge2")]


def test_sequential_and_subclassed_dict_models(tiny_data):
    x, y = tiny_data
    sequential = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="features"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(5),
    ])

    class DictNet(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(6, 3, padding="same", activation="relu")
            self.pool = keras.layers.GlobalAveragePooling2D()
            self.head = keras.layers.Dense(5)

        def call(self, inputs):
            features = self.conv(inputs)
            return {"logits": self.head(self.pool(features)), "block": features}

    distiller = compiled(keras_at.Distiller(sequential, DictNet(), pairs=[("features", "block")]))
    history = distiller.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert history.history["at_loss"][1] < history.history["at_loss"][0]
    assert set(distiller.attention_maps(x[:2])) == {"features-block"}


def test_subclassed_model_without_reachable_layers_is_refused(tiny_pair):
    class Plain(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3)
            self.head = keras.layers.Dense(5)

        def call(self, inputs):
            return self.head(keras.layers.GlobalAveragePooling2D()(self.conv(inputs)))

    with pytest.raises(ValueError, match="return a dict"):
        keras_at.Distiller(Plain(), tiny_pair[1], pairs=[("conv", "group0")])


def test_attention_maps_are_the_normalised_maps_the_loss_compares(tiny_pair, tiny_data):
    x, _ = tiny_data
    distiller = keras_at.Distiller(*tiny_pair)
    maps = distiller.attention_maps(x[:4])
    assert set(maps) == {"group0", "group1"}
    s, t = maps["group1"]
    assert s.shape == t.shape == (4, 8, 8)
    np.testing.assert_allclose(np.linalg.norm(s.reshape(4, -1), axis=1), 1.0, rtol=1e-5)
    features = keras.Model(tiny_pair[0].input, tiny_pair[0].get_layer("group1").output)
    t_features = keras.Model(tiny_pair[1].input, tiny_pair[1].get_layer("group1").output)
    expected = float(keras_at.at_loss(features(x[:4]), t_features(x[:4])))
    assert np.mean((s - t) ** 2) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pairs": [("nope", "group0")]}, r"no layer named 'nope'.*group0"),
        ({"pairs": [("group0", "missing")]}, r"teacher.*'missing'.*group1"),
        ({"pairs": [("head", "group0")]}, "4-D"),
        ({"pairs": ["group0"]}, "pair"),
        ({"pairs": "all"}, "auto"),
        ({"beta": -1.0}, "beta"),
        ({"hint_beta": float("nan")}, "hint_beta"),
        ({"alpha": 1.5}, "alpha"),
        ({"temperature": 0.0}, "temperature"),
        ({"p": 0}, "p"),
        ({"reduction": "median"}, "reduction"),
    ],
)
def test_bad_configuration_names_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_at.Distiller(tiny_net(4, "s"), tiny_net(8, "t"), **kwargs)


def test_more_bad_configurations(tiny_pair):
    student, teacher = tiny_pair
    with pytest.raises(ValueError, match="same object"):
        keras_at.Distiller(student, student)
    with pytest.raises(ValueError, match="classes"):
        keras_at.Distiller(student, tiny_net(8, "t10", classes=10), alpha=0.5)
    with pytest.raises(ValueError, match="input shape"):
        keras_at.Distiller(student, tiny_net(8, "t32", size=32))
    flat = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(),
                             keras.layers.Dense(5)])
    with pytest.raises(ValueError, match="found nothing to pair"):
        keras_at.Distiller(flat, teacher)
    distiller = keras_at.Distiller(student, teacher)
    with pytest.raises(ValueError, match="alpha"):
        distiller.alpha = 2.0
    with pytest.raises(ValueError, match="beta"):
        distiller.beta = -3


def test_pairs_empty_means_pure_kd(tiny_pair, tiny_data):
    x, y = tiny_data
    distiller = compiled(keras_at.Distiller(*tiny_pair, pairs=[], alpha=0.9))
    history = distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert "kd_loss" in history.history and "at_loss" not in history.history


def test_integer_images_are_refused_with_a_clear_message(tiny_pair, tiny_data):
    _, y = tiny_data
    distiller = compiled(keras_at.Distiller(*tiny_pair))
    with pytest.raises(ValueError, match="floating point"):
        distiller.fit(np.zeros((8, 16, 16, 3), "uint8"), y[:8], verbose=0)


def test_student_saves_and_distiller_config_round_trips(tmp_path, tiny_pair, tiny_data):
    x, y = tiny_data
    distiller = compiled(keras_at.Distiller(*tiny_pair, beta=123.0, alpha=0.25, p=1))
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    path = str(tmp_path / "student.keras")
    distiller.student.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), distiller.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    config = distiller.get_config()
    for key in ("student", "teacher", "pairs", "beta", "alpha", "p", "reduction", "temperature",
                "hint_beta", "grad_beta", "symmetry_beta", "input_grad_penalty"):
        assert key in config
    clone = keras_at.Distiller.from_config(config)
    assert clone.pairs == distiller.pairs and clone.beta == 123.0 and clone.alpha == 0.25
