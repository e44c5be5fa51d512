"""Taps: a model plus layer names turned into one multi-output model.

Like keras-hub's `pyramid_outputs`, the intermediate activations that the
transfer losses read are exposed by building, once, a functional model
`x -> [logits, feature_1, ..., feature_n]` that shares the original layers
and weights. Each training step then runs every network forward exactly
once.

What can be tapped (`keras_at._graph.FlatGraph`):

- every layer of a functional or `Sequential` model, those of nested functional models
  included, by name or by path (`"backbone/layer"`); a bare name where it is unique;
- tokens `(B, N, C)` of a transformer layer, as the `(B, h, w, C)` map of its patch tokens;
- subclassed models whose `call` returns a dict `{"logits": ..., name: feature, ...}`:
  the dict keys are the names pairs refer to (a subclassed model that returns
  a bare tensor has no reachable intermediate outputs and is refused with an
  error saying this);
- the group outputs of keras_at's own models (`group0`, `group1`, ...).

A network built for any image size, `(None, None, C)`, is tapped at the size the other network
(or the Distiller's `input_shape`) gives. Which activations are paired is `pairs.py`'s rule.
"""

from __future__ import annotations

import keras

from keras_at._graph import LOGITS_KEY, FeatureInfo, FlatGraph, input_shape_of, is_graph_model

__all__ = ["build_tap", "common_input_shape", "find_feature", "find_named_feature", "graph_model",
           "input_shape_of"]


def graph_model(model, role: str, input_shape=None) -> FlatGraph:
    """The flattened graph of `model` (`keras_at._graph.FlatGraph`), on `input_shape`.

    A functional or Sequential model is run on a fresh `keras.Input(input_shape)` (its own
    input shape by default), nested models inlined. A subclassed model is called on it; it
    must return a dict holding `"logits"` and its named feature maps.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"The {role} must be a keras.Model, got {type(model).__name__}.")
    if is_graph_model(model):
        return FlatGraph(model, role, input_shape or input_shape_of(model))
    if input_shape is None:
        raise ValueError(
            f"The {role} {model.name!r} is a subclassed model without a graph, and its input "
            "shape is unknown: pass `input_shape=(H, W, C)` to the Distiller, or give the "
            "other network a functional form."
        )
    graph = FlatGraph(model, role, input_shape)
    if not isinstance(graph.outputs, dict):
        raise ValueError(
            f"The {role} {model.name!r} is a subclassed model whose intermediate layers "
            "cannot be reached by name. Make its call() return a dict "
            f"{{'{LOGITS_KEY}': logits, '<feature name>': features, ...}} and name those keys "
            "in `pairs`, or build it as a functional or Sequential model."
        )
    return graph


def find_named_feature(features, name: str, role: str, model_name: str,
                       caller: str = "") -> FeatureInfo:
    """The feature of `features` that `name` names: its path, or a bare name unique among them.

    Else a `ValueError` naming the `role` model `model_name` and listing the features that can
    be paired (or, for a bare name that several nested layers share, their paths); `caller`
    starts the message (`"AttentionTransfer: "`).
    """
    start = f"{caller}the" if caller else "The"
    by_path = {info.name: info for info in features}
    if name in by_path:
        return by_path[name]
    matches = [info for info in features if info.name.endswith("/" + name)]
    if len(matches) > 1:
        raise ValueError(
            f"{start} {role} {model_name!r} has {len(matches)} layers named {name!r}, in "
            f"nested models: {[info.name for info in matches]}. Name one by its path."
        )
    if matches:
        return matches[0]
    raise ValueError(
        f"{start} {role} {model_name!r} has no layer named {name!r}. Layers with 4-D outputs "
        f"(or tokens of a patch grid) that can be paired: {[info.name for info in features]}."
    )


def find_feature(graph: FlatGraph, name: str) -> FeatureInfo:
    """The activation `name` names: a path, or a bare name unique in the flattened graph."""
    features = graph.features()
    by_path = name in {info.name for info in features}
    if not by_path and name in graph.aliases:  # a nested model: its output is an inner layer's
        inner = keras.tree.flatten(graph.aliases[name])
        matches = [info for info in features if info.layer is not None and len(inner) == 1
                   and graph.nodes[info.index].outputs[0] is inner[0]]
        if matches:
            return matches[0]
        return _refuse_shape(graph, name, inner)
    if not by_path and not any(info.name.endswith("/" + name) for info in features):
        for node in graph.nodes:
            if node.path == name or node.path.endswith("/" + name):
                return _refuse_shape(graph, name, node.outputs)
    return find_named_feature(features, name, graph.role, graph.name)


def _refuse_shape(graph: FlatGraph, name: str, outputs):
    outputs = keras.tree.flatten(outputs)
    shape = [t.shape for t in outputs] if len(outputs) != 1 else outputs[0].shape
    raise ValueError(
        f"The {graph.role} layer {name!r} outputs shape {shape}; attention transfer needs a "
        "4-D (B, H, W, C) feature map, or (B, N, C) tokens of a patch grid (N = h * w patches "
        f"after at most a few leading tokens)."
    )


def build_tap(graph: FlatGraph, names, role: str | None = None) -> keras.Model:
    """One model `x -> [logits, *features]` sharing the network's layers and weights.

    Every feature is a `(B, H, W, C)` map: token layers are laid on their patch grid.
    """
    features = [graph.map_tensor(find_feature(graph, name)) for name in names]
    return keras.Model(graph.inputs, [graph.logits, *features],
                       name=f"{graph.name}_{role or graph.role}_tap")


def common_input_shape(student, teacher, given=None):
    """The (H, W, C) both networks read; a `ValueError` when they differ.

    A size left open, `None` (a network built for any image size), takes the other network's
    or `given`'s; fixed sizes must agree, and so must channels.
    """
    shapes = [("student", input_shape_of(student)), ("teacher", input_shape_of(teacher)),
              ("input_shape", tuple(given) if given is not None else None)]
    shapes = [(role, shape) for role, shape in shapes if shape is not None]
    if not shapes:
        return None
    merged = shapes[0][1]
    for index, (role, shape) in enumerate(shapes[1:], 1):
        if not _agree(shape, merged):
            first, first_shape = next((r, s) for r, s in shapes[:index] if not _agree(s, shape))
            raise ValueError(
                f"The {_whose(first)} input shape {first_shape} differs from the {_whose(role)} "
                f"{shape}; both networks must read the same images (resize inside a model if "
                "needed)."
            )
        merged = tuple(a if a is not None else b for a, b in zip(merged, shape))
    return merged


def _agree(a, b) -> bool:
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def _whose(role: str) -> str:
    return "Distiller's `input_shape`" if role == "input_shape" else f"{role}'s"
