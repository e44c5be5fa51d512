"""The student's task loss: what `Distiller.compile(loss=...)` takes, and the labels it reads.

`loss` is what `keras.Model.compile` takes for a single output: a loss name
(`"sparse_categorical_crossentropy"`, `"mse"`, `"SparseCategoricalCrossentropy"`, Keras's
`"crossentropy"` shortcut), a function `fn(y_true, y_pred)`, or a `keras.losses.Loss`. Names
keep their Keras meaning: a function name means the function with its defaults
(`from_logits=False` for the crossentropies). The labels are the user's business except
where the loss reads class indices (`class_index_labels`): there they are checked against the
student's outputs, inside the step.
"""

from __future__ import annotations

import functools
import inspect
import warnings

import keras

# Keras's `loss="crossentropy"` (or `"ce"`): binary, sparse or categorical by the shapes.
_CROSSENTROPY = ("crossentropy", "ce")


@keras.saving.register_keras_serializable(package="keras_at")
class FunctionLoss(keras.losses.Loss):
    """A loss function `fn(y_true, y_pred)` as a `keras.losses.Loss`, as `keras.Model.compile`
    wraps one: labels and outputs whose ranks differ by a trailing axis of 1 are aligned first
    (`(B,)` targets for `(B, 1)` outputs), and the per-example values are reduced with the
    sample weights by Keras's `reduction`.

    Args:
        fn: the function, or one of Keras's loss names (`"crossentropy"` included).
        reduction: as `keras.losses.Loss`.
        name: the loss's name; the function's by default.
        dtype: as `keras.losses.Loss`.

    Example:

    ```python
    loss = keras_at.task.FunctionLoss(keras.losses.mean_squared_error)
    loss(np.array([1.0, 2.0]), np.array([[1.0], [4.0]]))  # 2.0
    ```
    """

    def __init__(self, fn, reduction="sum_over_batch_size", name=None, dtype=None):
        identifier = fn
        if isinstance(fn, str) and fn.lower() in _CROSSENTROPY:
            fn = _crossentropy
        elif isinstance(fn, str):
            fn = keras.losses.get(fn)
        super().__init__(
            name=name or (identifier if isinstance(identifier, str) else _name(fn)),
            reduction=reduction, dtype=dtype,
        )
        self.identifier = identifier
        self.fn = fn

    def call(self, y_true, y_pred):
        y_true, y_pred = _same_rank(y_true, y_pred)
        return self.fn(y_true, y_pred)

    def get_config(self):
        fn = self.identifier
        if not isinstance(fn, str):
            fn = keras.saving.serialize_keras_object(fn)
        return {**super().get_config(), "fn": fn}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if not isinstance(config["fn"], str):
            config["fn"] = keras.saving.deserialize_keras_object(config["fn"])
        return cls(**config)


def get(loss) -> keras.losses.Loss:
    """The `keras.losses.Loss` that `loss` names, as `keras.Model.compile` reads it for one output.

    None is `SparseCategoricalCrossentropy(from_logits=True)`: the networks output logits.
    A list or dict (one loss per output) is refused: the student has one logits output.
    """
    if loss is None:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if isinstance(loss, (list, tuple, dict)):
        raise ValueError(
            f"Distiller.compile takes one task loss, for the student's logits; got a "
            f"{type(loss).__name__} of losses ({loss!r}). Give a single loss: a name, a "
            "function or a keras.losses.Loss."
        )
    if inspect.isclass(loss):
        raise ValueError(
            f"Distiller.compile: `loss` is the class {loss.__name__}; give an instance, e.g. "
            f"{loss.__name__}(), or a loss name."
        )
    if isinstance(loss, str) and loss.lower() not in _CROSSENTROPY:
        loss = keras.losses.get(loss)  # a function, or a Loss for a class name
    if isinstance(loss, keras.losses.Loss):
        return loss
    if not (isinstance(loss, str) or callable(loss)):
        raise ValueError(
            f"Distiller.compile: `loss` must be a loss name, a function (y_true, y_pred) or a "
            f"keras.losses.Loss; got {loss!r}."
        )
    return FunctionLoss(loss)


def class_index_labels(loss, label_shape, logits_shape) -> tuple[bool, int | None]:
    """`(whether loss reads class indices, its ignore_class)` for labels of `label_shape` (None:
    unknown rank) and outputs of `logits_shape`.

    Recognised: `keras.losses.SparseCategoricalCrossentropy` (subclasses too), and
    `keras.losses.sparse_categorical_crossentropy` as a name, a function or a
    `functools.partial` of it; the `"crossentropy"` shortcut where it picks the sparse one.
    Any other loss reads its labels as given: `(False, None)`.
    """
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        return True, loss.ignore_class
    if not isinstance(loss, FunctionLoss):
        return False, None
    fn, keywords = _unwrap(loss.fn)
    if fn is _crossentropy:
        return label_shape is not None and _picks_sparse(label_shape, logits_shape), None
    if fn is keras.losses.sparse_categorical_crossentropy:
        return True, keywords.get("ignore_class")
    return False, None


def ignored_class(loss) -> int | None:
    """The label `loss` leaves out of its mean (`ignore_class`), None where it has none."""
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        return loss.ignore_class
    if isinstance(loss, FunctionLoss):
        return _unwrap(loss.fn)[1].get("ignore_class")
    return None


def warn_if_probability_loss_on_logits(loss, logits, model_name: str) -> None:
    """A warning when `loss` reads probabilities (`from_logits=False`) and the student's output
    layer `logits` comes from has a linear activation, so its outputs are logits.

    Silent where either is unknown (a custom loss, a subclassed network, a `Softmax` layer).
    """
    if _from_logits(loss) is not False:
        return
    history = getattr(logits, "_keras_history", None)
    activation = getattr(getattr(history, "operation", None), "activation", None)
    if activation is not keras.activations.linear:
        return
    warnings.warn(
        f"The task loss {loss.name!r} reads probabilities (from_logits=False), but the "
        f"student {model_name!r} outputs logits (its output layer "
        f"{history.operation.name!r} has a linear activation): give a loss with "
        "from_logits=True, e.g. keras.losses.SparseCategoricalCrossentropy(from_logits=True), "
        "or end the student with a softmax.",
        UserWarning, stacklevel=3,
    )


def _from_logits(loss):
    """The `from_logits` a loss reads its outputs with, None where it has no such setting."""
    if hasattr(loss, "from_logits"):
        return loss.from_logits
    if isinstance(loss, FunctionLoss):
        fn, keywords = _unwrap(loss.fn)
        if fn is _crossentropy:
            return False
        if "from_logits" in keywords:
            return keywords["from_logits"]
        try:
            parameter = inspect.signature(fn).parameters.get("from_logits")
        except (TypeError, ValueError):
            return None
        return None if parameter is None else parameter.default
    return None


def _unwrap(fn):
    """`(function, keyword arguments)` of a function, or of a `functools.partial` of one."""
    keywords = {}
    while isinstance(fn, functools.partial):
        keywords = {**fn.keywords, **keywords}
        fn = fn.func
    return fn, keywords


def _name(fn) -> str:
    return getattr(_unwrap(fn)[0], "__name__", type(fn).__name__)


def _picks_sparse(label_shape, logits_shape) -> bool:
    """Keras's rule for `"crossentropy"`: sparse when the labels lack the class axis."""
    if logits_shape[-1] == 1:
        return False
    return len(label_shape) < len(logits_shape) or label_shape[-1] == 1


def _crossentropy(y_true, y_pred):
    """Keras's `loss="crossentropy"`: binary for one output unit, sparse for class indices,
    categorical for one-hot labels (`keras.Model.compile`'s choice, by the shapes)."""
    if y_pred.shape[-1] == 1:
        return keras.losses.binary_crossentropy(y_true, y_pred)
    if _picks_sparse(y_true.shape, y_pred.shape):
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
    return keras.losses.categorical_crossentropy(y_true, y_pred)


def _same_rank(y_true, y_pred):
    """Labels and outputs whose ranks differ by a trailing axis of 1, aligned as Keras aligns
    them for a loss function: `(B,)` with `(B, 1)` gives `(B, 1)` twice; otherwise that axis is
    dropped."""
    true_rank, pred_rank = len(y_true.shape), len(y_pred.shape)
    if pred_rank == true_rank + 1 and y_pred.shape[-1] == 1:
        if true_rank == 1:
            y_true = keras.ops.expand_dims(y_true, -1)
        else:
            y_pred = keras.ops.squeeze(y_pred, -1)
    elif true_rank == pred_rank + 1 and y_true.shape[-1] == 1:
        if pred_rank == 1:
            y_pred = keras.ops.expand_dims(y_pred, -1)
        else:
            y_true = keras.ops.squeeze(y_true, -1)
    return y_true, y_pred
