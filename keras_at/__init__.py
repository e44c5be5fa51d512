"""keras_at: attention transfer (Zagoruyko & Komodakis, ICLR 2017) for Keras 3."""

from keras_at.attention import attention_map
from keras_at.distiller import Distiller
from keras_at.losses import at_loss, kd_loss

__all__ = ["Distiller", "at_loss", "attention_map", "kd_loss"]
__version__ = "0.1.0"
