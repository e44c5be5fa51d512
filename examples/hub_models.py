"""A keras-hub teacher with its preprocessor teaching a smaller network, on raw images.

The teacher is a keras-hub ResNet `ImageClassifier` whose preprocessor resizes and normalises
the raw images. The student is a smaller keras-hub ResNet task with a preprocessor of its own
(`--student hub`), or a keras.applications MobileNetV2 nested in a model of yours that resizes
and scales the images first (`--student applications`). In the Distiller's step each network
reads the same raw batch through its own preprocessing, as its own `predict` would. The data is
scikit-learn's 8x8 digits (offline) as raw RGB pixels, 0..255: the first 80% to train on, the
rest to test. The script trains the teacher, then the student alone and the same student (same
initial weights, same data order) with AT. It prints the pairs, the AT student's history and
the test accuracy of each network.

    python examples/hub_models.py                         # random weights, offline
    python examples/hub_models.py --student applications
    python examples/hub_models.py --preset resnet_50_imagenet --student-preset resnet_18_imagenet

`--preset` and `--student-preset` name keras-hub presets, loaded by
`keras_hub.models.ImageClassifier.from_preset(name, num_classes=10, activation=None)`: each gets
a new 10-class head, and the teacher is fine-tuned on the digits before it teaches. Their
weights are downloaded from the preset hub (Kaggle) on first use and cached; a preset folder on
disk (`task.save_to_preset(folder)`) needs no download. With `KERAS_AT_OFFLINE=1` a preset name
is refused before anything is downloaded. Needs keras-hub and scikit-learn (`pip install
".[hub]"` in a checkout).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402,F401  (the environment defaults every example sets)
import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import keras_at  # noqa: E402
from keras_at.data.sources import offline  # noqa: E402

CLASSES = 10


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--student", choices=("hub", "applications"), default="hub",
                   help="hub: a small keras-hub ResNet task with its own preprocessor; "
                   "applications: keras.applications MobileNetV2 (alpha 0.35) behind Resizing "
                   "and Rescaling layers")
    p.add_argument("--preset", default=None,
                   help="the teacher from this keras-hub preset (downloaded), e.g. "
                   "resnet_50_imagenet; default: a small ResNet task with random weights")
    p.add_argument("--student-preset", default=None,
                   help="the student from this keras-hub preset (downloaded), e.g. "
                   "resnet_18_imagenet; replaces --student")
    p.add_argument("--epochs", type=int, default=10, help="epochs of each student")
    p.add_argument("--teacher-epochs", type=int, default=None,
                   help="epochs of the teacher (default: --epochs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3,
                   help="Adam's initial learning rate, decayed to 0 along a cosine")
    p.add_argument("--beta", type=float, default=10.0,
                   help="AT weight: with Adam keep it near 10 (the paper's 1e3 is SGD's)")
    p.add_argument("--alpha", type=float, default=0.0, help="KD weight (0: AT alone)")
    p.add_argument("--limit", type=int, default=None,
                   help="train on the first N training images only")
    p.add_argument("--seed", type=int, default=0)
    return p


def raw_digits(limit: int | None):
    """scikit-learn's digits as raw RGB pixels (N, 8, 8, 3), 0..255, and their labels: the first
    80% (at most `limit`) for training, the rest for testing (keras_at.data's digits split)."""
    digits = load_digits()
    images = np.repeat(digits.images[..., None], 3, axis=-1).astype("float32") * (255 / 16)
    n_train = int(0.8 * len(images))
    train = slice(0, n_train if limit is None else min(limit, n_train))
    return ((images[train], digits.target[train]),
            (images[n_train:], digits.target[n_train:]))


def hub_resnet(name: str, filters: list[int], image_size: int, scale: float, offset: float):
    """A keras-hub ResNet classifier with random weights whose preprocessor resizes the images
    to `image_size` and maps pixels 0..255 to `pixel * scale + offset`. (keras-hub's
    basic-block ResNet needs 64 filters in its stem and first stack.)"""
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3],
        stackwise_num_filters=filters, stackwise_num_blocks=[1] * len(filters),
        stackwise_num_strides=[1] + [2] * (len(filters) - 1), block_type="basic_block",
        use_pre_activation=False, name=f"{name}_backbone",
    )
    converter = keras_hub.layers.ResNetImageConverter(
        image_size=(image_size, image_size), scale=scale, offset=offset
    )
    preprocessor = keras_hub.models.ResNetImageClassifierPreprocessor(converter)
    return keras_hub.models.ResNetImageClassifier(
        backbone, CLASSES, preprocessor=preprocessor, activation=None, name=name
    )


def applications_student(raw_shape):
    """keras.applications MobileNetV2 nested in a model that resizes to its 32x32 minimum and
    scales to the [-1, 1] it expects."""
    images = keras.Input(raw_shape)
    x = keras.layers.Resizing(32, 32)(images)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(x)
    mobilenet = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=CLASSES,
        classifier_activation=None,
    )
    return keras.Model(images, mobilenet(x), name="student")


def from_preset(name: str, flag: str):
    """The preset's ImageClassifier with a new 10-class logits head; a clear exit when its
    weights cannot be downloaded."""
    if offline() and not os.path.isdir(name):
        sys.exit(f"{flag} {name} needs a download: keras-hub preset weights come from the preset "
                 "hub (Kaggle), and KERAS_AT_OFFLINE=1 forbids downloads. Unset it, or pass a "
                 "preset folder saved with task.save_to_preset(folder).")
    try:
        # activation=None: logits, whatever the preset's head had.
        return keras_hub.models.ImageClassifier.from_preset(name, num_classes=CLASSES,
                                                            activation=None)
    except (OSError, ValueError) as error:  # requests' ConnectionError is an OSError
        sys.exit(f"{flag} {name}: the preset could not be loaded (its weights download from "
                 f"the preset hub, Kaggle, on first use): {error}")


def make_teacher(args):
    if args.preset:
        return from_preset(args.preset, "--preset")
    return hub_resnet("teacher", [64, 128, 256], image_size=32, scale=1 / 255, offset=0.0)


def make_student(args, raw_shape):
    keras.utils.set_random_seed(args.seed)  # the same initial weights for both students
    if args.student_preset:
        return from_preset(args.student_preset, "--student-preset")
    if args.student == "applications":
        return applications_student(raw_shape)
    return hub_resnet("student", [64, 32, 64], image_size=32, scale=1 / 127.5, offset=-1.0)


def fit(model, args, train, test, epochs) -> dict:
    """Trains `model` with Adam, its learning rate decayed to 0 along a cosine, on `train`,
    shuffled each epoch in the same order for every network; the history holds the `test`
    split's `val_` metrics."""
    steps = epochs * math.ceil(len(train[0]) / args.batch_size)
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(args.lr, steps)),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    keras.utils.set_random_seed(args.seed)
    # A new dataset for each network: one dataset's shuffle order goes on from fit to fit.
    train = tf.data.Dataset.from_tensor_slices(train).shuffle(len(train[0]), seed=args.seed)
    test = tf.data.Dataset.from_tensor_slices(test)
    # A task's fit applies its preprocessor to both datasets (and would not shuffle arrays).
    return model.fit(train.batch(args.batch_size), validation_data=test.batch(args.batch_size),
                     epochs=epochs, shuffle=False, verbose=0).history


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    train, test = raw_digits(args.limit)
    raw_shape = train[0].shape[1:]

    # Every network first: a preset that cannot be loaded stops the run before any training.
    teacher = make_teacher(args)
    alone = make_student(args, raw_shape)
    student = make_student(args, raw_shape)

    teacher_history = fit(teacher, args, train, test, args.teacher_epochs or args.epochs)
    alone_history = fit(alone, args, train, test, args.epochs)
    # Both tasks resize, so either reads any size: input_shape fixes the raw images' size.
    distiller = keras_at.Distiller(student, teacher, beta=args.beta, alpha=args.alpha,
                                   input_shape=raw_shape)
    print("pairs (student layer, teacher layer):")
    for pair in distiller.pairs:
        print(f"  {pair}")
    history = fit(distiller, args, train, test, args.epochs)
    print("history of the student with AT:")
    for epoch in range(args.epochs):
        print(f"  epoch {epoch + 1}: "
              + ", ".join(f"{key} {values[epoch]:.4g}" for key, values in history.items()))

    print(f"test accuracy of the teacher: {teacher_history['val_accuracy'][-1]:.4f}")
    print(f"test accuracy of the student alone: {alone_history['val_accuracy'][-1]:.4f}")
    print(f"test accuracy of the student with AT: {history['val_accuracy'][-1]:.4f}")


if __name__ == "__main__":
    main()
