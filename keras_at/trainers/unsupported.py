"""A Keras backend the Distiller does not run on (torch, numpy, openvino): a clear error."""

from __future__ import annotations

from keras_at.backend.unsupported import refuse
from keras_at.step import DistillationStep


class UnsupportedTrainer(DistillationStep):
    """Refuses to construct the Distiller on this backend."""

    def __init__(self, *args, **kwargs):
        refuse()
