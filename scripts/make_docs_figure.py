"""Regenerates docs/attention.png: attention maps of a small teacher and an AT-trained student.

Trains a small CNN teacher on real images for a few epochs, then a thinner
student with attention transfer (`keras_at.Distiller`, beta=1e3), and draws
`keras_at.visualize.plot_attention` for test images. The data is Fashion-MNIST
through `keras_at.data` (found offline in Debian's dataset-fashion-mnist
location), or scikit-learn's 8x8 digits upsampled to 32x32 where
`keras_at.data` is not available. A few minutes on two CPU cores.

    python scripts/make_docs_figure.py                # rewrites docs/attention.png
    python scripts/make_docs_figure.py --output /tmp/attention.png --dataset digits
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_at  # noqa: E402
from keras_at.visualize import plot_attention  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cnn(width, input_shape, num_classes, name):
    """Three groups of two 3x3 convolutions, the output of each group a layer named groupN."""
    inputs = keras.Input(input_shape)
    x = inputs
    for group in range(3):
        for block in range(2):
            stride = 2 if group > 0 and block == 0 else 1
            x = keras.layers.Conv2D(width * 2**group, 3, strides=stride, padding="same")(x)
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.ReLU(name=f"group{group}" if block == 1 else None)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name=name)


def digits():
    """scikit-learn's digits, upsampled to 32x32 and standardised: (train, test) arrays."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = tf.image.resize(bunch.images[..., None].astype("float32"), (32, 32)).numpy()
    images = (images - images.mean()) / images.std()
    labels = bunch.target.astype("int32")
    split = int(0.8 * len(images))
    return (images[:split], labels[:split]), (images[split:], labels[split:])


def datasets(name, limit, seed):
    """(train dataset, test images), from keras_at.data when it is importable."""
    try:
        from keras_at import data
    except ImportError:
        data = None
    if data is not None:
        train = data.load(name, "train", batch_size=64, limit=limit, seed=seed)
        test_images, _ = next(iter(data.load(name, "test", batch_size=64, shuffle=False)))
        return train, test_images.numpy()
    if name != "digits":
        raise SystemExit(f"keras_at.data is not available, so only --dataset digits works, "
                         f"not {name!r}.")
    (x, y), (x_test, _) = digits()
    train = tf.data.Dataset.from_tensor_slices((x[:limit], y[:limit]))
    return train.shuffle(len(x), seed=seed).batch(64), x_test


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.join(ROOT, "docs", "attention.png"))
    parser.add_argument("--dataset", default="fashion_mnist", choices=("fashion_mnist", "digits"))
    parser.add_argument("--limit", type=int, default=6000, help="training examples used")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=4, help="examples in the figure")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    train, test_images = datasets(args.dataset, args.limit, args.seed)
    shape = test_images.shape[1:]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    teacher = cnn(32, shape, 10, "teacher")
    teacher.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
    teacher.fit(train, epochs=args.epochs, verbose=2)

    distiller = keras_at.Distiller(cnn(8, shape, 10, "student"), teacher, beta=1e3)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
    distiller.fit(train, epochs=args.epochs, verbose=2)

    replacing = os.path.exists(args.output)
    plot_attention(distiller, test_images, args.output, max_images=args.rows, overwrite=True)
    print(f"{'Replaced' if replacing else 'Wrote'} {args.output}")


if __name__ == "__main__":
    main()
