"""Model families of the paper, with each group of blocks exposed as a layer named `group{i}`.

`wide_resnet` and `nin` are CIFAR networks written layer for layer after the authors' Torch
code; `resnet` builds ResNet-18/34 on keras-cv or keras-hub (imported only when `resnet` is
called). Their batch norms are `BatchNorm`: Keras's layer on TensorFlow's fused kernel, with
Torch's running variance; a saved model needs `import keras_at` to load it.
`load_authors_resnet` reads the authors' released ImageNet ResNet-18/34 weights into a model of
core Keras layers."""

from keras_at.models.authors_resnet import load_authors_resnet
from keras_at.models.batch_norm import BatchNorm, synchronize_moving_statistics
from keras_at.models.nin import nin
from keras_at.models.resnet import resnet
from keras_at.models.wide_resnet import wide_resnet

__all__ = [
    "BatchNorm", "load_authors_resnet", "nin", "resnet", "synchronize_moving_statistics",
    "wide_resnet",
]
