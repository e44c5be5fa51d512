"""The former module of the taps, kept as an import path: `keras_at.features.auto_pairs` is
documented. The taps are `keras_at.taps`'s, the pairing rule `keras_at.pairs`'s."""

from keras_at.pairs import auto_pairs
from keras_at.taps import build_tap, common_input_shape, graph_model, input_shape_of

__all__ = ["auto_pairs", "build_tap", "common_input_shape", "graph_model", "input_shape_of"]
