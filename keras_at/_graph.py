"""What a model offers to tap: its logits, its named outputs and its 4-D activations.

A graph model (functional or `Sequential`) exposes every layer's output; a subclassed model
exposes the dict its `call` returns (`{"logits": ..., name: feature, ...}`). The taps
(`features.py`) and the pairing rule (`pairs.py`) both read a model through these functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

LOGITS_KEY = "logits"


@dataclass(frozen=True)
class FeatureInfo:
    """Name, layer type and output shape of one tappable 4-D activation."""

    name: str
    layer: object
    shape: tuple  # (H, W, C), None where unknown


def is_graph_model(model) -> bool:
    """Whether `model` is functional or `Sequential`: built, with reachable inputs and outputs."""
    try:
        return bool(model.inputs) and model.outputs is not None
    except (AttributeError, ValueError):
        return False


def logits_and_named_outputs(model, role: str):
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
    _, named = logits_and_named_outputs(model, role)
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
