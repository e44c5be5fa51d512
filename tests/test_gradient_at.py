"""Gradient-based AT (eq. 3-6), flip symmetry and the input-gradient penalty in the Distiller.

Every expected number here is measured with the test's own `tf.GradientTape`s, never read
back from keras_at: J = d/dx of the sum over the batch of per-example cross-entropies, and
each term is `0.5 * mean_b ||J_b - J'_b||²`; the symmetry norm's outputs term is the same
distance between the student's logits of x and of flip(x). Precomputed teacher gradients are
checked the same way: against the test's tape, and against the step that computes them itself.
"""

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import slow_fixture

import keras_at
from keras_at.backend.tensorflow import LABEL_CHECK_SCOPE
from keras_at.callbacks import BetaScheduler
from keras_at.data.teacher_gradients import cached_gradient_dataset

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
TERM_OF = {"grad_beta": "grad_at_loss", "symmetry_beta": "symmetry_loss",
           "input_grad_penalty": "input_grad_loss", "symmetry_output_beta": "symmetry_output_loss"}


def conv_net(width, batch_norm, name, seed, num_classes=4):
    """Two conv groups (`group0` at 16x16, `group1` at 8x8), global pooling, dense logits."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3))
    x = inputs
    for g, stride in enumerate((1, 2)):
        x = keras.layers.Conv2D(width * (g + 1), 3, strides=stride, padding="same",
                                use_bias=not batch_norm, name=f"conv{g}")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"bn{g}")(x)
        x = keras.layers.Activation("relu", name=f"group{g}")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x), name=name)


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 16, 16, 3)).astype("float32"), rng.integers(0, 4, n)


def input_gradient(model, x, y, training=False, flip=False):
    """d/dx of the summed per-example CE; with `flip`, flip(J(flip(x))) (eq. 6)."""
    x = tf.reverse(tf.constant(x), [2]) if flip else tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = model(x, training=training)
        loss = tf.reduce_sum(
            keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
    jacobian = tape.gradient(loss, x)
    return tf.reverse(jacobian, [2]) if flip else jacobian


def half_sq_distance(a, b=None):
    diff = a if b is None else a - b
    return 0.5 * tf.reduce_mean(tf.reduce_sum(tf.square(tf.reshape(diff, (len(diff), -1))), -1))


def output_asymmetry(student, x, training=False):
    """0.5 * mean_b ||s(x) - s(flip x)||² of the student's logits, computed here."""
    flipped = tf.reverse(tf.constant(x), [2])
    return half_sq_distance(student(x, training=training), student(flipped, training=training))


def distances(student, teacher, x, y, training=False):
    """The four terms, independently: {history key: value}. The teacher is in inference mode."""
    j_s = input_gradient(student, x, y, training)
    return {
        "grad_at_loss": half_sq_distance(j_s, input_gradient(teacher, x, y)),
        "symmetry_loss": half_sq_distance(j_s, input_gradient(student, x, y, training, True)),
        "input_grad_loss": half_sq_distance(j_s),
        "symmetry_output_loss": output_asymmetry(student, x, training),
    }


def compiled(distiller, optimizer=None):
    distiller.compile(optimizer=optimizer or keras.optimizers.SGD(0.1), loss=CE,
                      metrics=["accuracy"])
    return distiller


@slow_fixture(scope="module")  # six students trained 5 epochs
def trained_students():
    """The same student (same init, data order, optimizer), trained with each term and without."""
    x, y = data()
    teacher = conv_net(16, False, "teacher", seed=1)
    students = {}
    for weight in (None, *TERM_OF):
        student = conv_net(8, False, "student", seed=0)
        # The logits' flip asymmetry (~1e-3 here) is larger than the input-gradient terms.
        kwargs = {weight: 1e2 if weight == "symmetry_output_beta" else 1e3} if weight else {}
        compiled(keras_at.Distiller(student, teacher, pairs=[], **kwargs)).fit(
            x, y, batch_size=16, epochs=5, shuffle=False, verbose=0)
        students[weight] = student
    return students, teacher, x, y


@pytest.mark.parametrize("weight", list(TERM_OF))
def test_each_term_shrinks_its_own_distance(trained_students, weight):
    students, teacher, x, y = trained_students
    term = TERM_OF[weight]
    with_term = float(distances(students[weight], teacher, x, y)[term])
    without = float(distances(students[None], teacher, x, y)[term])
    assert np.isfinite(with_term)
    assert with_term < 0.7 * without, (term, with_term, without)


def test_logged_terms_equal_the_independent_computation_in_inference_mode():
    x, y = data()
    student = conv_net(8, True, "student", seed=0)
    teacher = conv_net(16, True, "teacher", seed=1)
    distiller = compiled(keras_at.Distiller(student, teacher, pairs=[], grad_beta=1.0,
                                            symmetry_beta=1.0, input_grad_penalty=1.0,
                                            symmetry_output_beta=1.0))
    # A few steps, so that BN's moving statistics differ from batch statistics.
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)

    # Two batches: the per-batch means are combined by Keras into the mean over examples.
    logs = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)

    expected = distances(student, teacher, x, y, training=False)
    for term, value in expected.items():
        assert logs[term] == pytest.approx(float(value), rel=1e-4), term
    assert logs["task_loss"] == pytest.approx(float(CE(y, student(x, training=False))), rel=1e-5)
    assert logs["loss"] == pytest.approx(logs["task_loss"] + sum(map(float, expected.values())),
                                         rel=1e-5)
    # The check has power: in training mode (batch statistics) the values are different.
    batch_stats = distances(student, teacher, x, y, training=True)
    assert all(abs(float(batch_stats[t]) - logs[t]) > 1e-3 * logs[t] for t in expected)


@pytest.mark.parametrize("weight", [
    "grad_beta", pytest.param("symmetry_beta", marks=pytest.mark.slow),  # ~4 s each
    pytest.param("input_grad_penalty", marks=pytest.mark.slow), "symmetry_output_beta"])
def test_second_backprop_reaches_every_weight_through_batch_norm(weight):
    """One SGD step with and without the term: the difference is -lr * w * d(term)/dW.

    It must be nonzero for every trainable variable (conv kernels, BN gamma and beta,
    dense kernel and bias; the outputs term leaves the dense bias alone) and equal the
    gradient of the term computed with nested tapes in training mode, as the train step runs.
    """
    x, y = data(16)
    teacher = conv_net(8, True, "teacher", seed=1)
    lr, w = 0.01, 100.0
    stepped = {}
    for value in (0.0, w):
        student = conv_net(4, True, "student", seed=0)
        distiller = compiled(keras_at.Distiller(student, teacher, pairs=[], **{weight: value}),
                             keras.optimizers.SGD(lr))
        distiller.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        stepped[value] = [v.numpy() for v in student.trainable_variables]

    student = conv_net(4, True, "student", seed=0)
    with tf.GradientTape() as outer:
        term = distances(student, teacher, x, y, training=True)[TERM_OF[weight]]
    expected = outer.gradient(term, student.trainable_variables)

    for var, g, off, on in zip(student.trainable_variables, expected, stepped[0.0], stepped[w]):
        assert g is not None, var.path
        got = (on - off) / (-lr * w)
        if weight == "symmetry_output_beta" and var.path == "logits/bias":
            # The bias of the logits cancels in s(x) - s(flip x): no gradient, up to rounding.
            assert not np.any(g.numpy()) and np.abs(got).max() < 1e-6, var.path
            continue
        assert np.abs(got).max() > 0, f"the term's gradient does not reach {var.path}"
        scale = np.abs(g.numpy()).max()
        np.testing.assert_allclose(got, g.numpy(), rtol=2e-2, atol=2e-2 * scale,
                                   err_msg=var.path)


def traced_step(model, x, y):
    """The graph of the model's train step, as `fit` traces it (after one real step).

    `x` is images, or `(images, teacher_gradients)`.
    """
    model.fit(x, y, batch_size=len(y), epochs=1, verbose=0)
    x_spec = tf.nest.map_structure(lambda a: tf.TensorSpec(a.shape, tf.float32), x)
    spec = (x_spec, tf.TensorSpec(y.shape, tf.int64))
    return tf.function(model.train_step).get_concrete_function(spec).graph


def gradient_ops(graph):
    return collections.Counter(op.type for op in graph.get_operations()
                               if op.type.endswith("Grad") or "Backprop" in op.type)


@pytest.mark.slow  # ~6 s: traces and reads every term's graph
def test_all_terms_off_trace_no_inner_tape():
    x, y = data(16)
    teacher = conv_net(8, False, "teacher", seed=1)
    plain = conv_net(8, False, "plain", seed=0)
    plain.compile(optimizer=keras.optimizers.SGD(0.1), loss=CE)
    plain_graph = traced_step(plain, x, y)
    off = compiled(keras_at.Distiller(conv_net(8, False, "s", 0), teacher, pairs=[]))
    off_graph = traced_step(off, x, y)
    on = compiled(keras_at.Distiller(conv_net(8, False, "s", 0), teacher, pairs=[],
                                     grad_beta=1.0))
    on_graph = traced_step(on, x, y)

    # Off: exactly the backward ops of a plain student step (one backprop), and no
    # teacher; the rest is the Distiller's loss trackers.
    assert gradient_ops(off_graph) == gradient_ops(plain_graph)
    assert not any("teacher" in op.name for op in off_graph.get_operations())
    off_step = [op for op in off_graph.get_operations()
                if not op.name.startswith(LABEL_CHECK_SCOPE)]  # the Distiller's label check
    assert len(off_step) < 1.5 * len(plain_graph.get_operations())
    # On: the student's inner backprop, its second backprop and the teacher's J.
    on_ops, off_ops = gradient_ops(on_graph), gradient_ops(off_graph)
    assert on_ops["Conv2DBackpropFilter"] >= 3 * off_ops["Conv2DBackpropFilter"]
    assert on_ops["ReluGrad"] >= 3 * off_ops["ReluGrad"]
    assert len(on_graph.get_operations()) > 2 * len(off_graph.get_operations())


@pytest.mark.slow  # ~5 s: 2 epochs of every term
def test_gradient_terms_combine_with_activation_at_and_kd():
    x, y = data()
    student = conv_net(8, True, "student", seed=0)
    teacher = conv_net(16, True, "teacher", seed=1)
    weights = dict(beta=100.0, alpha=0.5, grad_beta=10.0, symmetry_beta=10.0,
                   input_grad_penalty=10.0)
    distiller = compiled(keras_at.Distiller(student, teacher, **weights))
    assert distiller.pairs == [("group0", "group0"), ("group1", "group1")]
    history = distiller.fit(x, y, batch_size=32, epochs=2, validation_data=(x, y), verbose=0)

    terms = ["task_loss", "at_loss", "kd_loss", "grad_at_loss", "symmetry_loss",
             "input_grad_loss"]
    expected_keys = {"loss", "accuracy", *terms}
    assert set(history.history) == expected_keys | {f"val_{k}" for k in expected_keys}
    for prefix in ("", "val_"):
        logs = {k: history.history[prefix + k][-1] for k in ["loss", *terms]}
        assert all(np.isfinite(v) and v > 0 for v in logs.values()), logs
        total = (0.5 * logs["task_loss"] + 0.5 * logs["kd_loss"] + 100.0 * logs["at_loss"]
                 + 10.0 * (logs["grad_at_loss"] + logs["symmetry_loss"]
                           + logs["input_grad_loss"]))
        assert logs["loss"] == pytest.approx(total, rel=1e-4)


# === The symmetry norm's outputs term ===


def test_symmetry_outputs_alone_equal_the_independent_computation_and_total():
    x, y = data()
    student = conv_net(8, True, "student", seed=0)
    distiller = compiled(keras_at.Distiller(student, conv_net(16, True, "teacher", seed=1),
                                            pairs=[], symmetry_output_beta=3.0))
    assert distiller.active_terms == ["symmetry_output_loss"]
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "task_loss", "symmetry_output_loss", "accuracy"}
    logs = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    expected = float(output_asymmetry(student, x))
    assert expected > 1e-4  # the student is not flip-invariant: the check has power
    assert logs["symmetry_output_loss"] == pytest.approx(expected, rel=1e-4)
    assert logs["loss"] == pytest.approx(logs["task_loss"] + 3.0 * expected, rel=1e-5)
    assert distiller.get_config()["symmetry_output_beta"] == 3.0
    clone = keras_at.Distiller.from_config(distiller.get_config())
    assert clone.symmetry_output_beta == 3.0 and "symmetry_output_loss" in clone.active_terms


@pytest.mark.slow  # ~7 s: traces and reads four steps' graphs
def test_symmetry_outputs_share_eq6s_flip_pass_alone_add_no_inner_tape_and_off_trace_nothing():
    x, y = data(16)
    teacher = conv_net(8, False, "teacher", seed=1)

    def graph(**weights):
        model = compiled(keras_at.Distiller(conv_net(8, False, "s", 0), teacher, pairs=[],
                                            **weights))
        return traced_step(model, x, y)

    def convs(g):
        return sum(op.type == "Conv2D" for op in g.get_operations())

    off = graph()
    zero = graph(symmetry_output_beta=0.0)
    alone = graph(symmetry_output_beta=1.0)
    eq6 = graph(symmetry_beta=1.0)
    both = graph(symmetry_beta=1.0, symmetry_output_beta=1.0)
    assert len(zero.get_operations()) == len(off.get_operations())
    # Alone: the student forward on x and on flip(x), one backprop through both, no inner tape.
    assert convs(alone) == 2 * convs(off)
    assert gradient_ops(alone) == collections.Counter(
        {k: 2 * v for k, v in gradient_ops(off).items()})
    # With eq. 6: its pass on flip(x) serves both terms; no third student forward.
    assert convs(both) == convs(eq6) > convs(alone)
    assert gradient_ops(both) == gradient_ops(eq6)


def test_symmetry_outputs_switched_on_by_a_callback_join_the_total_from_that_epoch():
    x, y = data(32)
    distiller = compiled(keras_at.Distiller(conv_net(4, False, "s", 0),
                                            conv_net(8, False, "t", 1), pairs=[]))
    schedule = BetaScheduler(lambda epoch, value: 0.0 if epoch == 0 else 5.0,
                             weight="symmetry_output_beta")
    history = distiller.fit(x, y, batch_size=16, epochs=2, callbacks=[schedule],
                            verbose=0).history
    assert history["symmetry_output_beta"] == [0.0, 5.0]
    assert history["loss"][0] == pytest.approx(history["task_loss"][0], rel=1e-6)
    assert len(history["symmetry_output_loss"]) == 1 and history["symmetry_output_loss"][0] > 0
    assert history["loss"][1] == pytest.approx(
        history["task_loss"][1] + 5.0 * history["symmetry_output_loss"][0], rel=1e-4)


# === Teacher gradients computed once (gradient AT with a frozen teacher) ===


@pytest.fixture(scope="module")
def bn_teacher():
    """A teacher with BN whose moving statistics differ from batch statistics, trained once;
    tests use it as a Distiller's teacher, which never changes it."""
    x, y = data(32, seed=5)
    teacher = conv_net(8, True, "teacher", seed=1)
    teacher.compile(optimizer=keras.optimizers.SGD(0.1), loss=CE)
    teacher.fit(x, y, batch_size=16, epochs=1, verbose=0)
    return teacher


def test_teacher_input_gradients_equal_an_independent_tape(bn_teacher):
    x, y = data(40)
    # On a copy: a call in training mode moves the shared teacher's moving statistics.
    copy = keras.models.clone_model(bn_teacher)
    copy.set_weights(bn_teacher.get_weights())
    batch_statistics = input_gradient(copy, x, y, training=True)
    distiller = compiled(keras_at.Distiller(conv_net(4, True, "s", 0), bn_teacher, pairs=[],
                                            grad_beta=1.0))
    expected = input_gradient(bn_teacher, x, y).numpy()
    got = distiller.teacher_input_gradients(x, y, batch_size=16)  # batches of 16, 16 and 8
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_allclose(distiller.teacher_input_gradients(x, y, batch_size=40), got,
                               rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    # In inference mode: the teacher's batch statistics give another J.
    assert not np.allclose(batch_statistics, got, rtol=1e-2)

    flipped = x[:, :, ::-1]
    got_flipped = distiller.teacher_input_gradients(flipped, y, batch_size=16)
    np.testing.assert_allclose(got_flipped, input_gradient(bn_teacher, flipped, y),
                               rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    # J(flip x) is not flip(J(x)): both must be computed.
    assert float(half_sq_distance(got_flipped, got[:, :, ::-1])) > 0.1 * float(
        half_sq_distance(got))


def test_teacher_input_gradients_trace_once_per_loss_not_per_call(bn_teacher):
    x, y = data(16)
    distiller = compiled(keras_at.Distiller(conv_net(4, True, "s", 0), bn_teacher, pairs=[],
                                            grad_beta=1.0))
    first = distiller.teacher_input_gradients(x, y, batch_size=16)
    function = distiller._teacher_gradient_function()
    traces = function.experimental_get_tracing_count()
    np.testing.assert_array_equal(distiller.teacher_input_gradients(x, y, batch_size=16), first)
    assert distiller._teacher_gradient_function() is function
    assert function.experimental_get_tracing_count() == traces == 1
    # A new compiled loss is a new J_T: recompiling gives a new function.
    distiller.compile(optimizer="sgd",
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert distiller._teacher_gradient_function() is not function


def one_step(distiller, x, y, sample_weight=None):
    """One SGD step on the whole batch: (logs, the student's weights after it)."""
    history = distiller.fit(x, y, sample_weight=sample_weight, batch_size=len(y), epochs=1,
                            shuffle=False, verbose=0)
    logs = {k: v[0] for k, v in history.history.items()}
    return logs, [v.numpy() for v in distiller.student.trainable_variables]


@pytest.mark.parametrize("weights, weighted", [
    ({"grad_beta": 100.0}, False),
    pytest.param({"grad_beta": 100.0}, True, marks=pytest.mark.slow),  # ~7 s each
    pytest.param({"grad_beta": 100.0, "beta": 100.0, "alpha": 0.5}, False,  # the teacher runs
                 marks=pytest.mark.slow),
])
def test_a_step_with_cached_teacher_gradients_is_the_step_without(bn_teacher, weights,
                                                                  weighted):
    x, y = data(16)
    sample_weight = np.random.default_rng(1).uniform(0.2, 2.0, len(y)) if weighted else None

    def distiller():
        return compiled(keras_at.Distiller(conv_net(4, True, "student", seed=0), bn_teacher,
                                           pairs=[] if "beta" not in weights else "auto",
                                           **weights), keras.optimizers.SGD(0.01))

    fresh, fresh_weights = one_step(distiller(), x, y, sample_weight)
    model = distiller()
    gradients = model.teacher_input_gradients(x, y)
    cached, cached_weights = one_step(model, (x, gradients), y, sample_weight)

    assert set(cached) == set(fresh)
    for key, value in fresh.items():
        assert cached[key] == pytest.approx(value, rel=1e-5), key
    for got, expected in zip(cached_weights, fresh_weights, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # The check has power: the cached gradients are read, and they matter.
    _, zero_weights = one_step(distiller(), (x, np.zeros_like(x)), y, sample_weight)
    assert not all(np.allclose(a, b, rtol=1e-3)
                   for a, b in zip(zero_weights, fresh_weights, strict=True))
    if weighted:
        unweighted, _ = one_step(distiller(), x, y)
        assert abs(unweighted["grad_at_loss"] - fresh["grad_at_loss"]) > 1e-3 * fresh[
            "grad_at_loss"]


@pytest.mark.slow  # ~4 s
def test_cached_gradient_dataset_pairs_each_shown_image_with_its_teacher_gradient(bn_teacher):
    x, y = data(24)
    distiller = compiled(keras_at.Distiller(conv_net(4, True, "s", 0), bn_teacher, pairs=[],
                                            grad_beta=1.0))
    dataset = cached_gradient_dataset(distiller, x, y, batch_size=8, flip=True, seed=0)
    shown = 0
    flips = []
    for _ in range(2):
        for (images, gradients), labels in dataset:
            expected = input_gradient(bn_teacher, images.numpy(), labels)
            np.testing.assert_allclose(gradients, expected, rtol=1e-5,
                                       atol=1e-6 * np.abs(expected).max())
            for image in images.numpy():
                flips.append(not any(np.array_equal(image, xi) for xi in x))
                if flips[-1]:
                    assert any(np.array_equal(image, xi[:, ::-1]) for xi in x)
            shown += len(labels)
    assert shown == 48 and 0.25 < np.mean(flips) < 0.75
    history = distiller.fit(dataset, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["grad_at_loss"][0])

    (images, gradients), labels = next(iter(cached_gradient_dataset(
        distiller, x, y, batch_size=24, flip=False, shuffle=False)))
    np.testing.assert_array_equal(images, x)
    np.testing.assert_allclose(gradients, input_gradient(bn_teacher, x, y), rtol=1e-5,
                               atol=1e-6 * np.abs(gradients.numpy()).max())
    # predict and evaluate read the same data: the student's logits of the images.
    unflipped = cached_gradient_dataset(distiller, x, y, batch_size=8, flip=False, shuffle=False)
    np.testing.assert_allclose(distiller.predict(unflipped, verbose=0),
                               distiller.student.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert np.isfinite(distiller.evaluate(unflipped, verbose=0, return_dict=True)["grad_at_loss"])


@pytest.mark.slow  # ~5 s
def test_cached_teacher_gradients_trace_no_teacher_and_one_double_backprop():
    x, y = data(16)
    teacher = conv_net(8, False, "teacher", seed=1)

    def graph(inputs, **weights):
        model = compiled(keras_at.Distiller(conv_net(8, False, "s", 0), teacher, pairs=[],
                                            **weights))
        if isinstance(inputs, tuple):
            inputs = (x, model.teacher_input_gradients(x, y))
        return traced_step(model, inputs, y)

    cached = graph((), grad_beta=1.0)
    fresh = graph(x, grad_beta=1.0)
    student_only = graph(x, input_grad_penalty=1.0)

    assert not any("teacher" in op.name for op in cached.get_operations())
    assert any("teacher" in op.name for op in fresh.get_operations())  # the check has power
    # The student's inner backprop and its second backprop, nothing else: as min-l2.
    assert gradient_ops(cached) == gradient_ops(student_only)
    assert gradient_ops(fresh)["Conv2DBackpropInput"] > gradient_ops(cached)["Conv2DBackpropInput"]


def test_cached_teacher_gradients_are_refused_where_they_cannot_be_right():
    x, y = data(8)
    teacher = conv_net(8, False, "teacher", seed=1)
    student = conv_net(4, False, "s", 0)
    off = compiled(keras_at.Distiller(student, teacher, pairs=[], input_grad_penalty=1.0))
    with pytest.raises(ValueError, match="grad_beta is 0 and was never on"):
        off.fit((x, x), y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="grad_beta is 0"):
        cached_gradient_dataset(off, x, y)

    on = keras_at.Distiller(conv_net(4, False, "s2", 0), teacher, pairs=[], grad_beta=1.0)
    with pytest.raises(ValueError, match="compile"):
        on.teacher_input_gradients(x, y)
    compiled(on)
    for wrong in (x[..., :1], x[:, :8]):
        with pytest.raises(ValueError, match="teacher_gradients of shape .* do not match"):
            on.fit((x, wrong), y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="teacher_gradients must be floating point"):
        on.fit((x, x.astype("int32")), y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="as many labels as images"):
        on.teacher_input_gradients(x, y[:4])
    with pytest.raises(ValueError, match="do not fit"):
        on.teacher_input_gradients(x[:, :8], y)

    summed = keras_at.Distiller(conv_net(4, False, "s3", 0), teacher, pairs=[], grad_beta=1.0)
    summed.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="sum"))
    with pytest.raises(ValueError, match="reduction='sum'"):
        summed.teacher_input_gradients(x, y)
    with pytest.raises(ValueError, match="reduction='sum'"):
        summed.fit((x, x), y, epochs=1, verbose=0)
