"""Feature taps: a model plus layer names turned into one multi-output model.

Like keras-hub's `pyramid_outputs`, the intermediate activations that the
transfer losses read are exposed by building, once, a functional model
`x -> [logits, feature_1, ..., feature_n]` that shares the original layers
and weights. Each training step then runs every network forward exactly
once.

Three kinds of model can be tapped:

- functional and `Sequential` models, by layer name;
- subclassed models whose `call` returns a dict `{"logits": ..., name: feature, ...}`:
  the dict keys are the names pairs refer to (a subclassed model that returns
  a bare tensor has no reachable intermediate outputs and is refused with an
  error saying this);
- the group outputs of keras_at's own models (`group0`, `group1`, ...).

Which activations are paired is `pairs.py`'s rule.
"""

from __future__ import annotations

import keras

from keras_at._graph import LOGITS_KEY, is_graph_model, list_features, logits_and_named_outputs

# `keras_at.features.auto_pairs` is documented (API.md): the rule lives in pairs.py now.
from keras_at.pairs import auto_pairs  # noqa: F401


def graph_model(model, role: str, input_shape=None):
    """Returns a functional model equivalent to `model` whose outputs are reachable.

    Functional and Sequential models are returned as they are. A subclassed
    model is called on a symbolic `keras.Input(input_shape)`; it must return
    a dict holding `"logits"` and its named feature maps.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"The {role} must be a keras.Model, got {type(model).__name__}.")
    if is_graph_model(model):
        return model
    if input_shape is None:
        raise ValueError(
            f"The {role} {model.name!r} is a subclassed model without a graph, and its input "
            "shape is unknown: pass `input_shape=(H, W, C)` to the Distiller, or give the "
            "other network a functional form."
        )
    inputs = keras.Input(shape=tuple(input_shape), name=f"{role}_input")
    outputs = model(inputs)
    if not isinstance(outputs, dict) or LOGITS_KEY not in outputs:
        raise ValueError(
            f"The {role} {model.name!r} is a subclassed model whose intermediate layers "
            "cannot be reached by name. Make its call() return a dict "
            f"{{'{LOGITS_KEY}': logits, '<feature name>': features, ...}} and name those keys "
            "in `pairs`, or build it as a functional or Sequential model."
        )
    return keras.Model(inputs, outputs, name=f"{model.name}_graph")


def input_shape_of(model):
    """(H, W, C) of a graph model's single image input, or None."""
    if not is_graph_model(model):
        return None
    inputs = model.inputs
    if len(inputs) != 1:
        raise ValueError(
            f"Model {model.name!r} has {len(inputs)} inputs; keras_at expects one image input."
        )
    return tuple(inputs[0].shape[1:])


def _feature_tensor(model, name: str, role: str):
    _, named = logits_and_named_outputs(model, role)
    if name in named:
        tensor = named[name]
    else:
        try:
            layer = model.get_layer(name)
        except ValueError:
            known = [info.name for info in list_features(model, role)]
            raise ValueError(
                f"The {role} {model.name!r} has no layer named {name!r}. Layers with 4-D outputs "
                f"that can be paired: {known}."
            ) from None
        tensor = layer.output
    if isinstance(tensor, (list, tuple)) or len(tensor.shape) != 4:
        shape = [t.shape for t in tensor] if isinstance(tensor, (list, tuple)) else tensor.shape
        raise ValueError(
            f"The {role} layer {name!r} outputs shape {shape}; attention transfer needs a "
            "4-D (B, H, W, C) feature map."
        )
    return tensor


def build_tap(model, names, role: str):
    """One model `x -> [logits, *features]` sharing `model`'s layers and weights."""
    logits, _ = logits_and_named_outputs(model, role)
    features = [_feature_tensor(model, name, role) for name in names]
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, [logits, *features], name=f"{model.name}_{role}_tap")


def common_input_shape(student, teacher, given=None):
    """The (H, W, C) both networks read; a `ValueError` when they differ."""
    s_shape, t_shape = input_shape_of(student), input_shape_of(teacher)
    if s_shape and t_shape and s_shape != t_shape:
        raise ValueError(
            f"The student's input shape {s_shape} differs from the teacher's {t_shape}; "
            "both networks must read the same images (resize inside a model if needed)."
        )
    return s_shape or t_shape or given


def check_class_counts(s_classes: int, t_classes: int, alpha) -> None:
    """KD compares logits: with `alpha` > 0 both networks must have as many classes."""
    if alpha and s_classes != t_classes:
        raise ValueError(
            f"KD (alpha={alpha}) needs the same number of classes, but the student has "
            f"{s_classes} logits and the teacher {t_classes}."
        )
