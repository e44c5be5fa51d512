"""keras_at: attention transfer (Zagoruyko & Komodakis, ICLR 2017) for Keras 3."""

from keras_at import callbacks, data, models, visualize
from keras_at.attention import attention_map
from keras_at.distiller import Distiller
from keras_at.export import export_student
from keras_at.interop import AttentionTransfer
from keras_at.losses import at_loss, kd_loss

__all__ = [
    "AttentionTransfer",
    "Distiller",
    "at_loss",
    "attention_map",
    "callbacks",
    "data",
    "export_student",
    "kd_loss",
    "models",
    "visualize",
]
from keras_at._version import __version__ as __version__
