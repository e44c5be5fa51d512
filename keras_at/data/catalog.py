"""What each named dataset is: classes, native shape, normalisation, standard augmentation."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from keras_at.data.augment import EVAL_SCALE, Augmentation
from keras_at.data.sources import DIGITS_SIZE, digits_arrays

KNOWN = ("cifar10", "cifar100", "fashion_mnist", "mnist", "digits")
SPLITS = ("train", "test")  # of every named dataset

# ImageNet statistics for image folders: the convention of ImageNet-trained models (and of the
# paper's ResNet experiments), the same for every split without a pass over the training files.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FOLDER_SIZE = (224, 224)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Metadata of a dataset, as `keras_at.data.load` uses it.

    Attributes:
        name: the dataset name (for image folders, the folder's path).
        num_classes: number of classes; labels are `0 .. num_classes - 1`.
        image_shape: native `(H, W, C)` of `load(name)` images (channels-last, grayscale C=1).
        mean, std: per-channel statistics on the [0, 1] scale; images are `(x - mean) / std`.
        class_names: label names in label order, or None.
        augmentation: the standard training augmentation (`augment=None` on the train split).
        eval_scale: how images are sized when not augmented: None resizes the whole image to
            the output size; a number `s` rescales the shorter side to `s` times the output size
            and takes the central window (single-crop evaluation; 256/224 for image folders).
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] | None = None
    augmentation: Augmentation | None = Augmentation()
    eval_scale: float | None = None


CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR100_CLASSES = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
    butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab
    crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard
    lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom
    oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine
    possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake
    spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor
    train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
)
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DIGIT_CLASSES = tuple(str(d) for d in range(10))

_INFOS = {
    # The authors' code's constants (mean, std of the train split x 255).
    "cifar10": DatasetInfo(
        "cifar10", 10, (32, 32, 3),
        mean=(125.3 / 255, 123.0 / 255, 113.9 / 255),
        std=(63.0 / 255, 62.1 / 255, 66.7 / 255),
        class_names=CIFAR10_CLASSES,
    ),
    # The constants of the authors' wide-residual-networks code for CIFAR-100.
    "cifar100": DatasetInfo(
        "cifar100", 100, (32, 32, 3),
        mean=(129.3 / 255, 124.1 / 255, 112.4 / 255),
        std=(68.2 / 255, 65.4 / 255, 70.4 / 255),
        class_names=CIFAR100_CLASSES,
    ),
    # Computed from train-images-idx3-ubyte.gz (60000 images, all pixels, population std).
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", 10, (28, 28, 1), mean=(0.2860406,), std=(0.3530242,),
        class_names=FASHION_CLASSES,
    ),
    # The usual MNIST values, computed the same way from its train split. No flip: it changes
    # digits.
    "mnist": DatasetInfo(
        "mnist", 10, (28, 28, 1), mean=(0.1307,), std=(0.3081,), class_names=DIGIT_CLASSES,
        augmentation=Augmentation(flip=False),
    ),
}


def image_info(root: str, classes: tuple[str, ...], augmentation: Augmentation) -> DatasetInfo:
    """The metadata of images read from files (an image folder, CUB): 224x224 by default,
    ImageNet statistics, single-crop evaluation (`augment.EVAL_SCALE`)."""
    return DatasetInfo(
        root, len(classes), (*FOLDER_SIZE, 3), IMAGENET_MEAN, IMAGENET_STD, classes,
        augmentation=augmentation, eval_scale=EVAL_SCALE,
    )


def named_info(name: str) -> DatasetInfo:
    """The metadata of a known dataset name."""
    if name == "digits":
        return _digits_info()
    return _INFOS[name]


@functools.lru_cache(maxsize=1)
def _digits_info() -> DatasetInfo:
    """Digits' mean/std, computed from its train split when first asked for (it ships with
    scikit-learn)."""
    train = digits_arrays()["train"][0].astype(np.float64) / 255
    return DatasetInfo(
        "digits", 10, (*DIGITS_SIZE, 1),
        mean=(float(train.mean()),), std=(float(train.std()),),
        class_names=DIGIT_CLASSES, augmentation=Augmentation(flip=False),
    )
