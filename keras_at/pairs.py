"""The rule that chooses which activations to pair: `pairs="auto"`, and checking given pairs.

When both networks name their groups of blocks `group0`, `group1`, ... (keras_at's own models
do), the shared groups are paired by name. Otherwise each spatial resolution that both
networks have gives one pair: the last block output there. Each pair's attention maps
(eq. 1, `attention.py`) are compared by eq. 2 (`losses.at_loss`).
"""

from __future__ import annotations

import re

import keras

from keras_at._graph import list_features

_GROUP = re.compile(r"group(\d+)")
_MERGES = (keras.layers.Add, keras.layers.Concatenate)
_ACTIVATIONS = (keras.layers.Activation, keras.layers.ReLU)
_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
# Their output sizes (MobileNetV2's 49x49 `block_1_pad`) are not resolutions of the network.
_PADDING = (keras.layers.ZeroPadding2D, keras.layers.Cropping2D)


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
