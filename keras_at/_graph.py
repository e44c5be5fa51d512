"""What a model offers to tap: its logits and every activation of its graph, nested models inlined.

A graph model (functional or `Sequential`) is run once, symbolically, on a fresh input
(`FlatGraph`). Every nested functional or `Sequential` model met on the way (a keras-hub
Backbone inside its ImageClassifier, a keras.applications model used as a layer, a user's
wrapper) is run layer by layer inside that same run, at any depth, so each layer's output is a
tensor of one flat graph over the original layers and weights: a multi-output model built from
it runs each layer once per call, with the training flag reaching every layer. A layer inside a
nested model is named by its path, `"res_net_backbone/stack1_block0_out"`.

A subclassed model exposes the dict its `call` returns (`{"logits": ..., name: feature, ...}`).

A transformer layer outputs tokens `(B, N, C)`: `N` is the patch grid's `h * w` tokens after
`k` leading ones (a class token, registers). The grid comes from the network: a layer that
declares `patch_size` and `image_size` (or `image_shape`), like keras-hub's
`ViTPatchingAndEmbedding`, or the last 4-D map the tokens were made from (a patch convolution);
failing those, the square `h = w` with the fewest leading tokens. Such tokens are tapped as the
`(B, h, w, C)` map of their patch tokens.

The taps (`taps.py`) and the pairing rule (`pairs.py`) read a model through a `FlatGraph`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
from keras import ops
from keras.src.models.functional import Functional

LOGITS_KEY = "logits"
# Leading tokens a token layer may carry before its patches: a class token, a distillation
# token, registers.
MAX_EXTRA_TOKENS = 16


@dataclass(frozen=True)
class FeatureInfo:
    """One tappable activation: a 4-D map, or tokens that make one.

    `name` is its path in the flattened graph; `layer` None for a subclassed model's named
    output; `shape` the `(H, W, C)` of the map (None where unknown); `extra_tokens` None for a
    4-D map, else the number of leading tokens dropped from `(B, k + H * W, C)`.
    """

    name: str
    layer: object
    shape: tuple
    index: int = -1
    extra_tokens: int | None = None


@dataclass
class Node:
    """One call of one operation in the flattened graph."""

    path: str
    operation: object
    outputs: list
    parents: tuple


def is_graph_model(model) -> bool:
    """Whether `model` is functional or `Sequential`: built, with reachable inputs and outputs."""
    try:
        return bool(model.inputs) and model.outputs is not None
    except (AttributeError, ValueError):
        return False


def _inlined_graph(operation):
    """The `Functional` whose graph stands for `operation`'s call, or None (an opaque layer).

    A functional model whose class overrides `call` computes something its graph does not
    show: it stays one layer.
    """
    if isinstance(operation, keras.Sequential):
        operation = getattr(operation, "_functional", None)
    if isinstance(operation, Functional) and type(operation).call is Functional.call:
        return operation
    return None


def _patch_grid(operation):
    """`(h, w)` of a layer declaring `patch_size` and `image_size`/`image_shape`, else None."""
    patch = getattr(operation, "patch_size", None)
    image = getattr(operation, "image_size", None) or getattr(operation, "image_shape", None)
    if patch is None or image is None:
        return None
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    image = (image, image) if isinstance(image, int) else tuple(image)
    sizes = (*patch, *image[:2])
    if len(patch) != 2 or len(image) < 2 or not all(isinstance(v, int) and v for v in sizes):
        return None
    return image[0] // patch[0], image[1] // patch[1]


def _token_layout(tokens: int, grid):
    """`(extra tokens, (h, w))` of `tokens` tokens: the grid's patches after a few leading ones.

    Without a known grid, the square with the fewest leading tokens; tokens that do not fit a
    known grid (pooled, merged) are not a map.
    """
    if grid is not None:
        extra = tokens - grid[0] * grid[1]
        return (extra, grid) if 0 <= extra <= MAX_EXTRA_TOKENS else None
    for extra in range(min(MAX_EXTRA_TOKENS, tokens) + 1):
        side = math.isqrt(tokens - extra)
        if side >= 2 and side * side == tokens - extra:
            return extra, (side, side)
    return None


class FlatGraph:
    """A model's graph with nested functional models inlined, on a fresh symbolic input.

    Attributes:
        inputs: the `keras.Input` the graph was run on.
        logits: the logits tensor.
        named: `{name: tensor}` of a subclassed model's named outputs.
        nodes: every operation call, in topological order (`Node`).
        aliases: `{path: output}` of each nested model (its output is an inner layer's).
        pyramid: paths of the layers a nested keras-hub backbone lists in `pyramid_outputs`.
    """

    def __init__(self, model, role: str, input_shape):
        self.name, self.role = model.name, role
        self.nodes, self.aliases, self.pyramid = [], {}, set()
        self._producer = {}
        self._grids, self._features = [], None
        self._names = {}  # operation name -> id of the operation holding it in this graph
        dtype = model.inputs[0].dtype if is_graph_model(model) else "float32"
        self.inputs = keras.Input(shape=tuple(input_shape), dtype=dtype, name=f"{role}_images")
        self._names[self.inputs._keras_history.operation.name] = None
        graph = _inlined_graph(model) if is_graph_model(model) else None
        if graph is not None:
            outputs = self._run(graph, [self.inputs], "", None)
        else:
            outputs = self._call(model, (self.inputs,), {}, "", None)
        self.outputs = outputs
        self.logits, self.named = _split_outputs(outputs, model, role)

    # === The symbolic run ===
    def _run(self, graph, inputs, prefix: str, training):
        def operation_fn(operation):
            def call(*args, **kwargs):
                return self._call(operation, args, kwargs, prefix, training)

            return call

        return graph._run_through_graph(inputs, operation_fn=operation_fn)

    def _call(self, operation, args, kwargs, prefix: str, training):
        # As Keras's Functional.call does for its own layers: the training flag a nested model
        # was called with reaches the layers inside it.
        if training is not None and "training" in getattr(operation, "_call_context_args", ()):
            kwargs = {**kwargs, "training": training}
        path = prefix + operation.name
        graph = _inlined_graph(operation)
        if graph is not None:
            inputs = args[0] if args else kwargs["inputs"]
            outputs = self._run(graph, keras.tree.flatten(inputs), path + "/",
                                kwargs.get("training", training))
            self.aliases.setdefault(path, outputs)
            self._mark_pyramid(operation, path)
            return outputs
        outputs = self._unique(operation, path)(*args, **kwargs)
        flat_inputs = keras.tree.flatten((args, kwargs))
        parents = tuple(sorted({self._producer[id(t)] for t in flat_inputs
                                if id(t) in self._producer}))
        index = len(self.nodes)
        self.nodes.append(Node(path, operation, keras.tree.flatten(outputs), parents))
        for tensor in self.nodes[-1].outputs:
            self._producer[id(tensor)] = index
        self._grids.append(self._grid_of(index))
        return outputs

    def _unique(self, operation, path: str):
        """`operation`, or an alias of it under a new name where another holds its name.

        A model's operations need unique names, and two nested models may each hold a
        `conv1` (an ensemble of two ResNets).
        """
        if self._names.setdefault(operation.name, id(operation)) == id(operation):
            return operation
        name, suffix = path.replace("/", "_"), 1
        while name in self._names:
            suffix += 1
            name = f"{path.replace('/', '_')}_{suffix}"
        self._names[name] = id(operation)
        return _Alias(operation, name)

    def _grid_of(self, index):
        """The patch grid node `index` declares or makes, else the one its inputs came from."""
        node = self.nodes[index]
        grid = _patch_grid(node.operation)
        if grid is None and len(node.outputs) == 1 and len(node.outputs[0].shape) == 4:
            h, w = node.outputs[0].shape[1:3]
            grid = (h, w) if h and w else None
        for parent in node.parents:
            if grid is not None:
                break
            grid = self._grids[parent]
        return grid

    def _mark_pyramid(self, backbone, path: str):
        try:
            levels = dict(getattr(backbone, "pyramid_outputs", None) or {})
        except (AttributeError, TypeError, ValueError):
            return
        for tensor in levels.values():
            history = getattr(tensor, "_keras_history", None)
            if history is not None:
                self.pyramid.add(f"{path}/{history.operation.name}")

    # === What can be tapped ===
    def features(self) -> list[FeatureInfo]:
        """Every tappable activation: named outputs, then layers in topological order."""
        if self._features is None:
            self._features = self._list_features()
        return self._features

    def _list_features(self) -> list[FeatureInfo]:
        infos = [
            FeatureInfo(name, None, tuple(tensor.shape[1:]))
            for name, tensor in self.named.items()
            if len(tensor.shape) == 4
        ]
        seen = set()
        for index in range(len(self.nodes)):
            info = self._feature_info(index)
            if info is not None and info.name not in seen:
                seen.add(info.name)
                infos.append(info)
        return infos

    def _feature_info(self, index):
        node = self.nodes[index]
        layer = node.operation
        if (not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.layers.InputLayer)
                or len(node.outputs) != 1):
            return None
        shape = tuple(node.outputs[0].shape[1:])
        if len(shape) == 3:
            return FeatureInfo(node.path, layer, shape, index)
        if len(shape) == 2 and shape[0] is not None:
            layout = _token_layout(shape[0], self._grids[index])
            if layout is not None:
                extra, (h, w) = layout
                return FeatureInfo(node.path, layer, (h, w, shape[1]), index, extra)
        return None

    def map_tensor(self, info: FeatureInfo):
        """The `(B, H, W, C)` tensor of `info`: a token layer's patch tokens laid on the grid."""
        if info.layer is None:
            return self.named[info.name]
        tensor = self.nodes[info.index].outputs[0]
        if info.extra_tokens is None:
            return tensor
        if info.extra_tokens:
            tensor = tensor[:, info.extra_tokens:, :]
        return ops.reshape(tensor, (-1, *info.shape))

    def weighted_depth(self) -> list[int]:
        """Per node, the most weighted layers (normalisation aside) on a path from the input."""
        depths = []
        for node in self.nodes:
            own = int(_weighted(node.operation)
                      and not isinstance(node.operation, _NORMALIZATIONS))
            depths.append(own + max((depths[p] for p in node.parents), default=0))
        return depths


class _Alias(keras.layers.Layer):
    """Calls `operation` under another name: its weights, its training flag, its dtype."""

    def __init__(self, operation, name: str):
        policy = getattr(operation, "dtype_policy", None)
        super().__init__(name=name, dtype=policy, autocast=False)
        self.operation = operation
        self._allow_non_tensor_positional_args = True
        self.built = True

    def call(self, *args, training=None, **kwargs):
        if training is not None and "training" in getattr(self.operation, "_call_context_args", ()):
            kwargs["training"] = training
        return self.operation(*args, **kwargs)

    def compute_output_spec(self, *args, training=None, **kwargs):
        return self.operation.compute_output_spec(*args, **kwargs)


_NORMALIZATIONS = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                   keras.layers.GroupNormalization, keras.layers.Normalization)


def _weighted(operation) -> bool:
    return bool(getattr(operation, "weights", None))


def _split_outputs(structure, model, role: str):
    """(logits tensor, {name: output}) of a model's output structure."""
    if isinstance(structure, dict):
        if LOGITS_KEY not in structure:
            raise ValueError(
                f"The {role} {model.name!r} returns a dict without a '{LOGITS_KEY}' key "
                f"(keys: {sorted(structure)}); keras_at reads the logits from it."
            )
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


def list_features(model, role: str = "model") -> list[FeatureInfo]:
    """Every tappable activation of a graph model, nested models' included, by path."""
    return FlatGraph(model, role, input_shape_of(model)).features()
