"""The step's loss as the README writes it, and where its pieces live (issue 17)."""

import ast
import pathlib

import keras
import numpy as np
import pytest

import keras_at
from keras_at.settings import TERMS, WEIGHTS
from keras_at.terms import switch_on, total_loss

ROOT = pathlib.Path(__file__).resolve().parents[1]


def weights(**values):
    return {name: keras.Variable(values.get(name, 0.0)) for name in WEIGHTS}


def test_total_is_the_readme_formula_and_skips_terms_not_computed():
    terms = {"task_loss": 2.0, "kd_loss": 3.0, "at_loss": 5.0, "hint_loss": 7.0,
             "grad_at_loss": 11.0, "symmetry_loss": 13.0, "input_grad_loss": 17.0,
             "symmetry_output_loss": 19.0}
    w = weights(alpha=0.25, beta=10.0, hint_beta=1.0, grad_beta=2.0, symmetry_beta=3.0,
                input_grad_penalty=4.0, symmetry_output_beta=5.0)
    expected = (0.75 * 2 + 0.25 * 3 + 10 * 5 + 7 + 2 * 11 + 3 * 13 + 4 * 17 + 5 * 19
                + 0.5 + 0.125)
    got = total_loss(terms, w, [keras.ops.convert_to_tensor(0.5), 0.125])
    assert float(got) == pytest.approx(expected)
    # A term not computed adds nothing, whatever its weight; without KD the task is not scaled.
    assert float(total_loss({"task_loss": 2.0, "at_loss": 5.0}, w)) == pytest.approx(52.0)


def test_a_term_is_switched_on_once_by_its_weight_and_pair_terms_need_pairs():
    active = set()
    assert not switch_on(active, "beta", 0.0, has_pairs=True)
    assert not switch_on(active, "beta", 1e3, has_pairs=False) and not active
    assert switch_on(active, "beta", 1e3, has_pairs=True) and active == {"at_loss"}
    assert not switch_on(active, "beta", 5.0, has_pairs=True)  # already on: no retrace
    assert switch_on(active, "grad_beta", 1.0, has_pairs=False)
    assert active == {TERMS["beta"], TERMS["grad_beta"]}


def module_imports(module: str) -> set[str]:
    """The keras_at modules `module` imports at module level (not inside functions)."""
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras_at"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names
                      if (ROOT / f"{node.module}.{a.name}".replace(".", "/")).with_suffix(
                          ".py").exists()}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("keras_at")}
    return found - {"keras_at"}


def test_the_distiller_never_imports_the_data_package_and_is_a_plain_keras_model():
    seen, todo = set(), ["keras_at.distiller"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += module_imports(module)
    assert "keras_at.gradient_at" in seen  # the walk follows imports
    assert not [m for m in seen if m.startswith("keras_at.data")], sorted(seen)
    # A keras.Model, with this backend's trainer before it, derived from the shared step alone.
    assert keras_at.Distiller.__bases__ == (keras_at.trainers.Trainer, keras.Model)
    assert keras_at.trainers.Trainer.__bases__ == (keras_at.step.DistillationStep,)
    assert keras_at.step.DistillationStep.__bases__ == (object,)


def test_cached_gradient_dataset_is_a_data_function_the_deprecated_method_calls():
    from keras_at.data.teacher_gradients import cached_gradient_dataset

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 8, 8, 1)).astype("float32"), rng.integers(0, 2, 6)

    def net():
        return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(2)])

    teacher = net()
    off = keras_at.Distiller(net(), teacher, pairs=[])
    with pytest.raises(ValueError, match="grad_beta is 0"):
        cached_gradient_dataset(off, x, y)
    on = keras_at.Distiller(net(), teacher, pairs=[], grad_beta=1.0)
    on.compile(optimizer="sgd")
    (_, from_function), _ = next(iter(cached_gradient_dataset(on, x, y, 6, flip=False,
                                                              shuffle=False)))
    with pytest.warns(DeprecationWarning, match="keras_at.data.teacher_gradients"):
        method = on.cached_gradient_dataset(x, y, 6, flip=False, shuffle=False)
    (_, from_method), _ = next(iter(method))
    np.testing.assert_array_equal(from_function, from_method)
    np.testing.assert_array_equal(from_function, on.teacher_input_gradients(x, y))
    assert np.abs(from_function).max() > 0
