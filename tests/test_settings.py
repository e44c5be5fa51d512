"""The Distiller's settings after construction: live, retraced, or refused; the user's teacher;
the changes and the data that fit, evaluate and predict refuse."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import Batches, tiny_net

import keras_at

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def frozen_fit(distiller, x, y):
    """One step on the whole batch with learning rate 0: the logs are the step's own values."""
    if getattr(distiller, "optimizer", None) is None:
        distiller.compile(optimizer=keras.optimizers.SGD(0.0), loss=CE)
    history = distiller.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return {k: v[0] for k, v in history.history.items()}


def features(model, training):
    """The model's group outputs, run outside the Distiller."""
    taps = keras.Model(model.input, [model.get_layer(n).output for n in ("group0", "group1")])
    return lambda x: taps(x, training=training)


def test_temperature_assigned_after_tracing_is_the_one_the_step_uses(tiny_pair, tiny_data):
    x, y = tiny_data
    student, teacher = tiny_pair
    distiller = keras_at.Distiller(student, teacher, alpha=0.5, temperature=4.0)
    before = frozen_fit(distiller, x, y)
    train_function = distiller.train_function
    distiller.temperature = 1.0
    after = frozen_fit(distiller, x, y)

    assert distiller.train_function is train_function  # a live variable: no retrace
    s_logits, t_logits = student(x, training=True), teacher(x, training=False)
    expected = float(keras_at.kd_loss(s_logits, t_logits, temperature=1.0))
    assert after["kd_loss"] == pytest.approx(expected, rel=1e-5)
    assert before["kd_loss"] == pytest.approx(
        float(keras_at.kd_loss(s_logits, t_logits, temperature=4.0)), rel=1e-5)
    assert abs(after["kd_loss"] - before["kd_loss"]) > 1e-2 * before["kd_loss"]
    logs = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    inference = float(keras_at.kd_loss(student(x), t_logits, temperature=1.0))
    assert logs["kd_loss"] == pytest.approx(inference, rel=1e-4)
    assert distiller.get_config()["temperature"] == 1.0


@pytest.mark.slow  # ~4 s: the step and evaluation traced three times each
def test_attention_settings_assigned_after_tracing_retrace_the_step(tiny_pair, tiny_data):
    x, y = tiny_data
    student, teacher = tiny_pair
    distiller = keras_at.Distiller(student, teacher)
    logs = [frozen_fit(distiller, x, y)]
    distiller.evaluate(x, y, batch_size=len(x), verbose=0)
    t_feats = features(teacher, False)(x)
    attention = {"p": 2, "reduction": "sum"}
    for setting, value in (("p", 4), ("reduction", "max")):
        setattr(distiller, setting, value)
        attention[setting] = value
        logs.append(frozen_fit(distiller, x, y))
        evaluated = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)

        def expected(training):
            s_feats = features(student, training)(x)
            return sum(float(keras_at.at_loss(s, t, **attention))
                       for s, t in zip(s_feats, t_feats))

        assert logs[-1]["at_loss"] == pytest.approx(expected(True), rel=1e-5), setting
        # Inference in a traced graph (oneDNN may fold BN) against eager: a looser tolerance.
        assert evaluated["at_loss"] == pytest.approx(expected(False), rel=1e-4), setting
        assert abs(logs[-1]["at_loss"] - logs[-2]["at_loss"]) > 1e-2 * logs[-2]["at_loss"]
        assert getattr(distiller, setting) == value
        assert distiller.get_config()[setting] == value
    maps = distiller.attention_maps(x[:4])
    direct = keras_at.attention_map(features(student, False)(x[:4])[1], **attention)
    direct = direct.numpy().reshape(4, -1)
    np.testing.assert_allclose(maps["group1"][0].reshape(4, -1),
                               direct / np.linalg.norm(direct, axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-7)


def test_pairs_are_read_only_with_a_message_that_says_how_to_change_them(tiny_pair):
    distiller = keras_at.Distiller(*tiny_pair)
    with pytest.raises(AttributeError, match=r"keras_at\.Distiller\(student, teacher, pairs="):
        distiller.pairs = [("group0", "group0")]
    assert distiller.pairs == [("group0", "group0"), ("group1", "group1")]
    assert distiller.get_config()["pairs"] == [["group0", "group0"], ["group1", "group1"]]


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": float("inf")}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"temperature": "4"}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"beta": True}, "beta"),
    ({"beta": "100"}, "beta"),
    ({"alpha": np.bool_(True)}, "alpha"),
])
def test_values_refused_at_construction(kwargs, message, tiny_pair):
    with pytest.raises(ValueError, match=message):
        keras_at.Distiller(*tiny_pair, **kwargs)


def test_values_refused_at_assignment_leave_the_setting_as_it_was(tiny_pair):
    distiller = keras_at.Distiller(*tiny_pair, alpha=0.5)
    for name, value in [("temperature", float("inf")), ("temperature", 0.0), ("beta", True),
                        ("beta", "100"), ("hint_beta", "1"), ("p", -1), ("reduction", "median")]:
        before = getattr(distiller, name)
        with pytest.raises(ValueError, match=name):
            setattr(distiller, name, value)
        assert getattr(distiller, name) == before, name
    distiller.beta = np.float32(250.0)  # numbers of every kind still work
    assert distiller.beta == 250.0


def test_kd_switched_on_later_with_other_class_counts_is_refused_like_at_construction(tiny_data):
    x, y = tiny_data
    student, teacher = tiny_net(4, "s"), tiny_net(8, "t10", classes=10)
    with pytest.raises(ValueError, match="student has 5 logits and the teacher 10") as built:
        keras_at.Distiller(student, teacher, alpha=0.5)
    distiller = keras_at.Distiller(student, teacher)
    with pytest.raises(ValueError) as assigned:
        distiller.alpha = 0.5
    assert str(assigned.value) == str(built.value)
    assert distiller.alpha == 0.0 and "kd_loss" not in distiller.active_terms
    distiller.compile(optimizer="sgd", loss=CE)
    assert "kd_loss" not in distiller.fit(x, y, batch_size=32, verbose=0).history


def test_at_loss_on_different_batch_sizes_names_both():
    a = np.random.rand(2, 4, 4, 3).astype("float32")
    b = np.random.rand(3, 4, 4, 5).astype("float32")
    with pytest.raises(ValueError, match="batch size 2 and the teacher's 3"):
        keras_at.at_loss(a, b)
    with pytest.raises(ValueError, match="batch size 2 and the teacher's 3"):
        keras_at.losses.hint_loss(a, b[..., :3])

    spec = tf.TensorSpec((None, 4, 4, None), tf.float32)
    traced = tf.function(keras_at.at_loss, input_signature=[spec, spec])
    with pytest.raises(tf.errors.InvalidArgumentError, match="batch sizes"):
        traced(a, b)
    assert float(traced(a, a)) == 0.0


def test_the_users_teacher_stays_trainable_but_the_distiller_never_trains_it(tiny_data):
    x, y = tiny_data
    student, teacher = tiny_net(4, "s"), tiny_net(8, "t")
    distiller = keras_at.Distiller(student, teacher, alpha=0.5, hint_beta=1.0)
    assert teacher.trainable and all(v.trainable for v in teacher.trainable_variables)
    teacher_ids = {id(v) for v in teacher.variables}
    for listing in (distiller.trainable_weights, distiller.trainable_variables):
        assert not teacher_ids & {id(v) for v in listing}
    assert teacher_ids <= {id(v) for v in distiller.non_trainable_weights}
    assert teacher_ids <= {id(v) for v in distiller.non_trainable_variables}
    adapters = [v for a in distiller.hint_adapters if a is not None for v in a.trainable_weights]
    assert len(distiller.trainable_weights) == len(student.trainable_weights) + len(adapters)

    before = [w.copy() for w in teacher.get_weights()]  # kernels and BN statistics
    distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=CE)
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for b, a in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(b, a)

    teacher.compile(optimizer=keras.optimizers.SGD(0.1), loss=CE)
    teacher.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert all(not np.array_equal(b, a) for b, a in zip(before, teacher.get_weights()))


def test_a_teacher_the_user_froze_stays_frozen(tiny_pair):
    student, teacher = tiny_pair
    teacher.trainable = False
    keras_at.Distiller(student, teacher)
    assert teacher.trainable is False


def test_kd_loss_refuses_a_temperature_that_would_give_nan():
    z = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    with pytest.raises(ValueError, match="finite number > 0, got inf"):
        keras_at.kd_loss(z, z, temperature=float("inf"))
    assert float(keras_at.kd_loss(z, z, temperature=1e3)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name, value", [
    ("beta", 1e39),  # inf in float32
    ("hint_beta", 1e-46),  # 0 in float32: the term asked for would weigh nothing
    ("grad_beta", 1e-40),  # a denormal
    ("temperature", 1e39),
    ("temperature", 1e-46),
    ("temperature", 2e19),  # T² overflows: inf * 0 = NaN
    ("temperature", 1e-20),  # T² underflows: a KD term of 0
])
def test_values_float32_cannot_hold_are_refused_naming_the_setting(name, value, tiny_pair):
    with pytest.raises(ValueError, match=re.escape(f"`{name}`={value!r} is out of") + ".*float32"):
        keras_at.Distiller(*tiny_pair, **{name: value})
    distiller = keras_at.Distiller(*tiny_pair, alpha=0.5)
    before = getattr(distiller, name)
    with pytest.raises(ValueError, match=f"`{name}`"):
        setattr(distiller, name, value)
    assert getattr(distiller, name) == before


def test_temperatures_at_the_ends_of_the_float32_range_train_to_finite_losses(tiny_data):
    x, y = tiny_data
    low, high = keras_at.losses.TEMPERATURE_RANGE
    distiller = keras_at.Distiller(tiny_net(4, "s"), tiny_net(8, "t"), pairs=[], beta=0.0,
                                   alpha=0.5, temperature=low * 1.01)
    for temperature in (low * 1.01, high * 0.99):
        distiller.temperature = temperature
        logs = frozen_fit(distiller, x[:8], y[:8])
        assert np.isfinite(logs["loss"]) and np.isfinite(logs["kd_loss"]), temperature
        if temperature < 1:  # T² does not underflow: the term is there
            assert logs["kd_loss"] > 0


def test_numpy_scalars_are_numbers_for_every_setting(tiny_pair):
    distiller = keras_at.Distiller(*tiny_pair, p=np.float32(2), beta=np.float32(250),
                                   alpha=np.float64(0.5), temperature=np.int64(3))
    assert (distiller.p, distiller.beta, distiller.alpha, distiller.temperature) == (2, 250, 0.5, 3)
    distiller.p = np.int64(4)
    distiller.hint_beta = np.int32(1)
    config = distiller.get_config()
    assert type(config["p"]) is int and config["p"] == 4 and config["hint_beta"] == 1.0
    keras_at.Distiller.from_config(config)  # the settings serialise as plain numbers
    assert keras_at.AttentionTransfer("group0", "group0", p=np.float32(1.5)).p == 1.5
    decay = keras_at.callbacks.BetaDecay(factor=np.float32(0.5), epochs=(1,),
                                         initial_value=np.float64(10))
    assert decay.factor == 0.5


def test_a_student_frozen_after_a_fit_asks_for_compile_before_training_again(tiny_data):
    x, y = tiny_data
    distiller = keras_at.Distiller(tiny_net(4, "s"), tiny_net(8, "t"), hint_beta=1.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss=CE)
    distiller.fit(x, y, batch_size=64, verbose=0)
    distiller.student.trainable = False
    student = [w.copy() for w in distiller.student.get_weights()]
    with pytest.raises(ValueError, match=r"changed since the optimizer.*distiller\.compile"):
        distiller.fit(x, y, batch_size=64, verbose=0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss=CE)
    adapters = [w.copy() for a in distiller.hint_adapters if a for w in a.get_weights()]
    distiller.fit(x, y, batch_size=64, verbose=0)
    for before, after in zip(student, distiller.student.get_weights()):
        np.testing.assert_array_equal(after, before)  # frozen, BN statistics included
    after = [w for a in distiller.hint_adapters if a for w in a.get_weights()]
    assert any(not np.array_equal(b, a) for b, a in zip(adapters, after))  # still trained


def test_empty_data_is_refused_by_evaluate_predict_and_fits_validation(tiny_pair, tiny_data):
    x, y = tiny_data
    distiller = keras_at.Distiller(*tiny_pair)
    distiller.compile(optimizer="sgd", loss=CE)
    none = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    unknown = none.filter(lambda images, labels: False)  # cardinality unknown: read to find out
    for data in (x[:0], none.take(0), unknown, Batches([])):
        with pytest.raises(ValueError, match=r"empty: evaluate\(\)|evaluate\(\) read no batch"):
            distiller.evaluate(data, y[:0] if data is x[:0] else None, verbose=0)
        with pytest.raises(ValueError, match=r"empty: predict\(\)|predict\(\) read no batch"):
            distiller.predict(data, verbose=0)
    with pytest.raises(ValueError, match="validation data is empty"):
        distiller.fit(x, y, validation_data=(x[:0], y[:0]), verbose=0)
    assert distiller.optimizer.iterations == 0  # refused before training
    logs = distiller.evaluate(Batches([(x[:8], y[:8])]), verbose=0, return_dict=True)
    assert logs["loss"] > 0
