"""The rule that chooses which activations to pair: `pairs="auto"`, and checking given pairs.

When both networks name their groups of blocks `group0`, `group1`, ... (keras_at's own models
do), the shared groups are paired by name. Otherwise each spatial resolution that both
networks have gives one pair: the last block output there. Each pair's attention maps
(eq. 1, `attention.py`) are compared by eq. 2 (`losses.at_loss`).
"""

from __future__ import annotations

import math
import re
import warnings

import keras

from keras_at import taps
from keras_at._graph import FlatGraph

_GROUP = re.compile(r"group(\d+)")
_MERGES = (keras.layers.Add, keras.layers.Concatenate)
_ACTIVATIONS = (keras.layers.Activation, keras.layers.ReLU)
_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
# Their output sizes (MobileNetV2's 49x49 `block_1_pad`) are not resolutions of the network.
_PADDING = (keras.layers.ZeroPadding2D, keras.layers.Cropping2D)


def _consumers(graph: FlatGraph) -> dict:
    """{node index: consumer nodes} of the flattened graph."""
    consumers = {}
    for node in graph.nodes:
        for parent in node.parents:
            consumers.setdefault(parent, []).append(node)
    return consumers


def _learned(graph: FlatGraph) -> set:
    """Indices of the nodes whose output some weighted layer computed or precedes.

    Preprocessing (`Rescaling`, `Normalization`, resizing) only transforms the
    image: an attention map of it is not a feature of the network.
    """
    learned = set()
    for index, node in enumerate(graph.nodes):  # topological order
        layer = node.operation
        weighted = bool(getattr(layer, "weights", None)) and not isinstance(
            layer, keras.layers.Normalization)
        if weighted or any(p in learned for p in node.parents):
            learned.add(index)
    return learned


def _candidates(graph: FlatGraph) -> list:
    """The activations the resolution rule may pick (see `_block_outputs`)."""
    learned = _learned(graph)
    return [
        info
        for info in graph.features()
        if not isinstance(info.layer, _PADDING)
        and (info.layer is None or info.index in learned)
        and None not in info.shape[:2]
        and tuple(info.shape[:2]) != (1, 1)
    ]


def _block_outputs(graph: FlatGraph) -> dict:
    """{(H, W): FeatureInfo} of the last block output at each spatial resolution.

    Where a nested keras-hub backbone lists a level in `pyramid_outputs`, that
    level's layer. Otherwise a block output is a residual merge (`Add`/`Concatenate`); the
    activation a merge feeds directly (post-activation ResNets: ResNet50's
    `convN_blockM_out`); or, in a network with merges, a linear bottleneck: a
    BatchNormalization read directly by a convolution, which is how an
    inverted-residual block without a shortcut ends (MobileNetV2's
    `block_N_project_BN`, the last block of its stem resolution and of its
    last stage). Where a resolution has no block output, the last 4-D layer
    there. A pre-activation BN/ReLU that opens the next group is never
    chosen when a block output exists. Never candidates: padding and
    cropping layers (their sizes are not resolutions of the network),
    preprocessing before any weighted layer, and 1x1 maps (squeeze-excitation,
    convolutional heads), whose normalised attention is a constant. A transformer's token
    layers count at their patch grid's resolution.
    """
    consumers = _consumers(graph)
    infos = _candidates(graph)
    has_merges = any(isinstance(info.layer, _MERGES) for info in infos)
    last_any, last_block, pyramid = {}, {}, {}
    previous = None
    for info in infos:
        resolution = info.shape[:2]
        last_any[resolution] = info
        layer = info.layer
        parents = graph.nodes[info.index].parents if info.layer is not None else ()
        post_activation = (
            isinstance(layer, _ACTIVATIONS)
            and previous is not None
            and isinstance(previous.layer, _MERGES)
            and tuple(parents) == (previous.index,)
        )
        linear_bottleneck = (
            has_merges
            and isinstance(layer, keras.layers.BatchNormalization)
            and any(isinstance(c.operation, _CONVOLUTIONS) for c in consumers.get(info.index, ()))
        )
        if isinstance(layer, _MERGES) or post_activation or linear_bottleneck:
            last_block[resolution] = info
        if info.name in graph.pyramid:
            pyramid[resolution] = info
        previous = info
    return {res: pyramid.get(res) or last_block.get(res, info) for res, info in last_any.items()}


def _group_names(graph: FlatGraph) -> dict:
    """{N: path} of the layers, or dict outputs of a subclassed model, named `groupN`.

    A `groupN` inside a nested model counts (a wrapped keras_at network); a network with two
    layers of the same group name (two nested networks) has no groups to match by name.
    """
    found = {}
    for name in [info.name for info in graph.features()]:
        match = _GROUP.fullmatch(name.rsplit("/", 1)[-1])
        if match:
            found.setdefault(int(match.group(1)), []).append(name)
    if any(len(paths) > 1 for paths in found.values()):
        return {}
    return {n: paths[0] for n, paths in found.items()}


def _nearest(resolution, others):
    """The resolution of `others` closest to `resolution` in scale (log of the area ratio)."""
    area = resolution[0] * resolution[1]
    return min(others, key=lambda hw: abs(math.log(hw[0] * hw[1] / area)))


def _token_pairs(s_blocks: dict, t_blocks: dict, paired: list) -> list:
    """Pairs for a transformer's token map whose patch grid the other network lacks.

    A keras-hub ViT has one reachable resolution (its encoder is one layer): its output
    pairs with the other network's block output at the nearest resolution.
    """
    extra = []
    for own, other, student_side in ((s_blocks, t_blocks, True), (t_blocks, s_blocks, False)):
        for res, info in own.items():
            if info.extra_tokens is None or res in other or not other:
                continue
            partner = other[_nearest(res, list(other))]
            pair = (info, partner) if student_side else (partner, info)
            if all(pair[0] is not a and pair[1] is not b for a, b in paired + extra):
                extra.append(pair)
    return extra


def _scale_pairs(s_blocks: dict, t_blocks: dict) -> list:
    """Pairs at the same downsampling from each network's finest resolution, for networks that
    share no resolution because they read the images at different sizes (a keras-hub task
    whose image converter resizes 64x64 images to 48x48: its 24, 12, 6 pair with 32, 16, 8).

    at_loss resizes the teacher's map to the student's, so such maps still compare.
    """

    def by_scale(blocks):
        known = [hw for hw, info in blocks.items()
                 if None not in hw and info.extra_tokens is None]
        if not known:
            return {}
        top = max(known, key=lambda hw: hw[0] * hw[1])
        return {(round(top[0] / hw[0], 1), round(top[1] / hw[1], 1)): hw for hw in known}

    s_scales, t_scales = by_scale(s_blocks), by_scale(t_blocks)
    return [(s_blocks[s_scales[k]], t_blocks[t_scales[k]]) for k in s_scales if k in t_scales]


def auto_pairs(student, teacher) -> list[tuple[str, str]]:
    """The `pairs="auto"` rule of the API.

    When both networks have layers named `group0`, `group1`, ..., exactly the
    shared ones, matched by name. Otherwise, for each spatial resolution that
    both networks have, the last block output at that resolution, from the
    highest resolution to the lowest; a transformer's token map whose patch grid the other
    network lacks pairs with the nearest resolution. Networks that share no resolution
    (one reads the images resized) pair their resolutions by downsampling from each one's
    finest. Layers inside nested models count, named by path (`"backbone/layer"`).

    `student` and `teacher` are built Keras models (or their `keras_at._graph.FlatGraph`s).
    """
    student, teacher = _flat_graphs(student, teacher)
    s_groups, t_groups = _group_names(student), _group_names(teacher)
    shared = sorted(set(s_groups) & set(t_groups))
    if shared:
        return [(s_groups[i], t_groups[i]) for i in shared]
    s_blocks, t_blocks = _block_outputs(student), _block_outputs(teacher)
    resolutions = [res for res in s_blocks if res in t_blocks]
    chosen = [(s_blocks[res], t_blocks[res]) for res in resolutions]
    chosen += _token_pairs(s_blocks, t_blocks, chosen)
    if not chosen:
        chosen = _scale_pairs(s_blocks, t_blocks)
    chosen.sort(key=lambda pair: -pair[0].shape[0] * pair[0].shape[1])
    if not chosen:
        open_size = [g.role for g in (student, teacher) if None in g.inputs.shape[1:3]]
        hint = ""
        if open_size:
            hint = (f" The {' and the '.join(open_size)} {'is' if len(open_size) == 1 else 'are'} "
                    "built for images of any size: pass `input_shape=(H, W, C)` to the "
                    "Distiller so resolutions are known.")
        raise ValueError(
            "pairs='auto' found nothing to pair: the student and teacher share no layers named "
            f"group0, group1, ... and no spatial resolution of a 4-D layer (student: "
            f"{sorted(s_blocks)}, teacher: {sorted(t_blocks)}). Pass pairs=[(student_layer, "
            f"teacher_layer), ...] or pairs=[].{hint}"
        )
    _refuse_input_level(chosen, student, teacher)
    return [(s.name, t.name) for s, t in chosen]


def _refuse_input_level(chosen, student: FlatGraph, teacher: FlatGraph) -> None:
    """A `ValueError` when the rule found only layers at the network's doorstep.

    A network whose blocks cannot be reached (an opaque subclassed layer behind a 1x1
    convolution) shows only what precedes them: pairing that would train attention transfer on
    an input convolution, silently, so it is an error (explicit pairs can still name such
    layers). A single pair at the input resolution while deeper resolutions go unpaired may
    be right (a student that never downsamples) or the same trap one block later: a warning.
    """
    depths = {id(g): g.weighted_depth() for g in (student, teacher)}

    def shallow(graph, info):
        return info.layer is not None and depths[id(graph)][info.index] <= 1

    named = [(s.name, t.name) for s, t in chosen]
    if all(shallow(student, s) or shallow(teacher, t) for s, t in chosen):
        raise ValueError(
            f"pairs='auto' would pair only {named}: layers at the input that precede every "
            "block of the network, as when the network's blocks are inside a subclassed "
            "layer, which a functional model shows as one opaque layer. Attention transfer "
            "there would train an input convolution, not the network's attention. Name the "
            "layers to compare with pairs=[(student_layer, teacher_layer), ...] (paths such as "
            "'backbone/layer' reach nested models)."
        )
    image = tuple(student.inputs.shape[1:3])
    if None in image:  # resized inside the networks: no input resolution to compare with
        return
    unpaired = sorted({
        tuple(info.shape[:2])
        for graph in (student, teacher) for info in _candidates(graph)
        if info.shape[0] * info.shape[1] < image[0] * image[1]
    }, reverse=True)
    if len(chosen) == 1 and tuple(chosen[0][0].shape[:2]) == image and unpaired:
        warnings.warn(
            f"pairs='auto' pairs only {named}, at the input resolution {image}, while "
            f"resolutions {unpaired} of one network have no match in the other. If a network's "
            "deeper layers are hidden (a subclassed layer), name the pairs: pairs=[(student_"
            "layer, teacher_layer), ...].",
            stacklevel=4,
        )


def _flat_graphs(student, teacher):
    if isinstance(student, FlatGraph) and isinstance(teacher, FlatGraph):
        return student, teacher
    shape = taps.common_input_shape(student, teacher)
    return (taps.graph_model(student, "student", shape),
            taps.graph_model(teacher, "teacher", shape))


def pair_name(student_layer: str, teacher_layer: str) -> str:
    """The key of a pair in logs and `attention_maps` (paths keep their "/")."""
    if student_layer == teacher_layer:
        return student_layer
    return f"{student_layer}-{teacher_layer}"


def layer_safe(name: str) -> str:
    """`name` as part of a Keras layer name, which cannot hold the "/" of a nested path."""
    return name.replace("/", "_")


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
