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

This module also holds `auto_pairs`, the `pairs="auto"` rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import keras

LOGITS_KEY = "logits"
_GROUP = re.compile(r"group(\d+)")
_MERGES = (keras.layers.Add, keras.layers.Concatenate)
_ACTIVATIONS = (keras.layers.Activation, keras.layers.ReLU)
_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
# Their output sizes (MobileNetV2's 49x49 `block_1_pad`) are not resolutions of the network.
_PADDING = (keras.layers.ZeroPadding2D, keras.layers.Cropping2D)


@dataclass(frozen=True)
class FeatureInfo:
    """Name, layer type and output shape of one tappable 4-D activation."""

    name: str
    layer: object
    shape: tuple  # (H, W, C), None where unknown


def _is_graph_model(model) -> bool:
    try:
        return bool(model.inputs) and model.outputs is not None
    except (AttributeError, ValueError):
        return False


def graph_model(model, role: str, input_shape=None):
    """Returns a functional model equivalent to `model` whose outputs are reachable.

    Functional and Sequential models are returned as they are. A subclassed
    model is called on a symbolic `keras.Input(input_shape)`; it must return
    a dict holding `"logits"` and its named feature maps.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"The {role} must be a keras.Model, got {type(model).__name__}.")
    if _is_graph_model(model):
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
    if not _is_graph_model(model):
        return None
    inputs = model.inputs
    if len(inputs) != 1:
        raise ValueError(
            f"Model {model.name!r} has {len(inputs)} inputs; keras_at expects one image input."
        )
    return tuple(inputs[0].shape[1:])


def _logits_and_named_outputs(model, role: str):
    """(logits tensor, {name: symbolic 4-D-or-not output}) of a graph model."""
    try:
        structure = model.output
    except AttributeError:  # a Sequential model exposes only the flat `outputs`
        structure = model.outputs
    if isinstance(structure, dict):
        named = dict(structure)
        logits = named.pop(LOGITS_KEY)
        return logits, named
    outputs = structure if isinstance(structure, (list, tuple)) else [structure]
    if len(outputs) != 1:
        raise ValueError(
            f"The {role} {model.name!r} has {len(outputs)} outputs; expected one logits output "
            f"(or a dict with a '{LOGITS_KEY}' key)."
        )
    return outputs[0], {}


def list_features(model, role: str = "model") -> list[FeatureInfo]:
    """Every 4-D activation of a graph model, in topological order."""
    _, named = _logits_and_named_outputs(model, role)
    infos = [
        FeatureInfo(name, None, tuple(tensor.shape[1:]))
        for name, tensor in named.items()
        if len(tensor.shape) == 4
    ]
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            output = layer.output
        except (AttributeError, ValueError):
            continue
        if isinstance(output, (list, tuple)) or len(output.shape) != 4:
            continue
        infos.append(FeatureInfo(layer.name, layer, tuple(output.shape[1:])))
    return infos


def _feature_tensor(model, name: str, role: str):
    _, named = _logits_and_named_outputs(model, role)
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
    logits, _ = _logits_and_named_outputs(model, role)
    features = [_feature_tensor(model, name, role) for name in names]
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, [logits, *features], name=f"{model.name}_{role}_tap")


def _links(model) -> tuple[dict, dict]:
    """({id(layer): parent layers}, {id(layer): consumer layers}) within `model`."""
    members = {id(layer) for layer in model.layers}
    parents, consumers = {}, {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for parent in node.parent_nodes:
                if id(parent.operation) in members:
                    parents.setdefault(id(layer), []).append(parent.operation)
                    consumers.setdefault(id(parent.operation), []).append(layer)
    return parents, consumers


def _learned(model, parents: dict) -> set:
    """ids of the layers whose output some weighted layer computed or precedes.

    Preprocessing (`Rescaling`, `Normalization`, resizing) only transforms the
    image: an attention map of it is not a feature of the network.
    """
    learned = set()
    for layer in model.layers:  # topological order
        weighted = bool(layer.weights) and not isinstance(layer, keras.layers.Normalization)
        if weighted or any(id(p) in learned for p in parents.get(id(layer), ())):
            learned.add(id(layer))
    return learned


def _block_outputs(model, role: str) -> dict:
    """{(H, W): name} of the last block output at each spatial resolution.

    A block output is a residual merge (`Add`/`Concatenate`); the activation a
    merge feeds directly (post-activation ResNets: ResNet50's
    `convN_blockM_out`); or, in a network with merges, a linear bottleneck: a
    BatchNormalization read directly by a convolution, which is how an
    inverted-residual block without a shortcut ends (MobileNetV2's
    `block_N_project_BN`, the last block of its stem resolution and of its
    last stage). Where a resolution has no block output, the last 4-D layer
    there. A pre-activation BN/ReLU that opens the next group is never
    chosen when a block output exists. Never candidates: padding and
    cropping layers (their sizes are not resolutions of the network),
    preprocessing before any weighted layer, and 1x1 maps (squeeze-excitation,
    convolutional heads), whose normalised attention is a constant.
    """
    parents, consumers = _links(model)
    learned = _learned(model, parents)
    infos = [
        info
        for info in list_features(model, role)
        if not isinstance(info.layer, _PADDING)
        and (info.layer is None or id(info.layer) in learned)
        and tuple(info.shape[:2]) != (1, 1)
    ]
    has_merges = any(isinstance(info.layer, _MERGES) for info in infos)
    last_any, last_block = {}, {}
    previous = None
    for info in infos:
        resolution = info.shape[:2]
        last_any[resolution] = info.name
        layer = info.layer
        post_activation = (
            isinstance(layer, _ACTIVATIONS)
            and previous is not None
            and isinstance(previous.layer, _MERGES)
            and [id(p) for p in parents.get(id(layer), ())] == [id(previous.layer)]
        )
        linear_bottleneck = (
            has_merges
            and isinstance(layer, keras.layers.BatchNormalization)
            and any(isinstance(c, _CONVOLUTIONS) for c in consumers.get(id(layer), ()))
        )
        if isinstance(layer, _MERGES) or post_activation or linear_bottleneck:
            last_block[resolution] = info.name
        previous = info
    return {res: last_block.get(res, name) for res, name in last_any.items()}


def _group_names(model) -> dict:
    """{N: name} of the layers, or dict outputs of a subclassed model, named `groupN`."""
    candidates = [layer.name for layer in model.layers]
    try:
        structure = model.output
    except AttributeError:
        structure = None
    if isinstance(structure, dict):
        candidates += list(structure)
    names = {}
    for name in candidates:
        match = _GROUP.fullmatch(name)
        if match:
            names[int(match.group(1))] = name
    return names


def auto_pairs(student, teacher) -> list[tuple[str, str]]:
    """The `pairs="auto"` rule of the API.

    When both networks have layers named `group0`, `group1`, ..., exactly the
    shared ones, matched by name. Otherwise, for each spatial resolution that
    both networks have, the last block output at that resolution, from the
    highest resolution to the lowest.
    """
    s_groups, t_groups = _group_names(student), _group_names(teacher)
    shared = sorted(set(s_groups) & set(t_groups))
    if shared:
        return [(s_groups[i], t_groups[i]) for i in shared]
    s_blocks = _block_outputs(student, "student")
    t_blocks = _block_outputs(teacher, "teacher")
    resolutions = [res for res in s_blocks if res in t_blocks]
    resolutions.sort(key=lambda hw: -(hw[0] or 0) * (hw[1] or 0))
    pairs = [(s_blocks[res], t_blocks[res]) for res in resolutions]
    if not pairs:
        raise ValueError(
            "pairs='auto' found nothing to pair: the student and teacher share no layers named "
            f"group0, group1, ... and no spatial resolution of a 4-D layer (student: "
            f"{sorted(s_blocks)}, teacher: {sorted(t_blocks)}). Pass pairs=[(student_layer, "
            "teacher_layer), ...] or pairs=[]."
        )
    return pairs


def pair_name(student_layer: str, teacher_layer: str) -> str:
    """The key of a pair in logs and `attention_maps`."""
    if student_layer == teacher_layer:
        return student_layer
    return f"{student_layer}-{teacher_layer}"


def common_input_shape(student, teacher, given=None):
    """The (H, W, C) both networks read; a `ValueError` when they differ."""
    s_shape, t_shape = input_shape_of(student), input_shape_of(teacher)
    if s_shape and t_shape and s_shape != t_shape:
        raise ValueError(
            f"The student's input shape {s_shape} differs from the teacher's {t_shape}; "
            "both networks must read the same images (resize inside a model if needed)."
        )
    return s_shape or t_shape or given


def resolve_pairs(pairs, student_graph, teacher_graph) -> list[tuple[str, str]]:
    """`pairs="auto"` or a list of (student_layer, teacher_layer), checked, as tuples."""
    if isinstance(pairs, str):
        if pairs != "auto":
            raise ValueError(f"`pairs` must be 'auto' or a list of pairs, got {pairs!r}.")
        return auto_pairs(student_graph, teacher_graph)
    resolved = []
    for pair in pairs:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2
                and all(isinstance(n, str) for n in pair)):
            raise ValueError(
                "Each entry of `pairs` must be a (student_layer_name, teacher_layer_name) "
                f"pair of strings, got {pair!r}."
            )
        resolved.append((pair[0], pair[1]))
    return resolved


def check_class_counts(s_classes: int, t_classes: int, alpha) -> None:
    """KD compares logits: with `alpha` > 0 both networks must have as many classes."""
    if alpha and s_classes != t_classes:
        raise ValueError(
            f"KD (alpha={alpha}) needs the same number of classes, but the student has "
            f"{s_classes} logits and the teacher {t_classes}."
        )
