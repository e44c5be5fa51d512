"""CUB-200-2011 read from its own files, with the paper's preprocessing (§4.2.1).

A folder is CUB-200-2011 when it holds `images.txt`; it must then hold the dataset's other
files as distributed (`CUB_200_2011.tgz` unpacked):

    images.txt               <image_id> <path under images/>
    image_class_labels.txt   <image_id> <class_id>          (1-based)
    classes.txt              <class_id> <class name>        (1-based, in order)
    bounding_boxes.txt       <image_id> <x> <y> <width> <height>   (pixels, from the top left)
    train_test_split.txt     <image_id> <1: train, 0: test>
    images/<class>/<file>.jpg

Splits are "train" and "test" of `train_test_split.txt`; labels are `class_id - 1`. "On CUB we
crop bounding boxes, rescale to 256 in one dimension and then take a random crop": every image
is cropped to its bounding box when read; training rescales the shorter side to 256/224 of the
output size and takes a random window (and flips: our choice); evaluation rescales the same way
and takes the central window (our choice: the paper does not say). A split's images are listed
in the order of `keras_at.data.splits.stratified_order`, so a slice such as `"train[90%:]"`
holds every class.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from keras_at.data import catalog, folders, splits
from keras_at.data.augment import EVAL_SCALE, Augmentation

if TYPE_CHECKING:
    import tensorflow as tf

FILES = (
    "images.txt",
    "image_class_labels.txt",
    "classes.txt",
    "bounding_boxes.txt",
    "train_test_split.txt",
)
SPLITS = ("train", "test")


def is_cub(root: str) -> bool:
    """Whether the folder `root` is a CUB-200-2011 folder (it holds `images.txt`)."""
    return os.path.isfile(os.path.join(root, "images.txt"))


def info(root: str) -> catalog.DatasetInfo:
    """The metadata of the CUB folder `root`: its classes, ImageNet statistics, the recipe."""
    return catalog.image_info(
        root, class_names(root), Augmentation(pad=0, scale_short=EVAL_SCALE)
    )


def class_names(root: str) -> tuple[str, ...]:
    """The class names of `classes.txt`, in class-id order."""
    rows = _table(root, "classes.txt", 2)
    ids = [_number(root, "classes.txt", n, row[0], int) for n, row in rows]
    if ids != list(range(1, len(ids) + 1)):
        raise ValueError(
            f"{os.path.join(root, 'classes.txt')} must list class ids 1, 2, ... in order; "
            f"got {ids[:10]}{' ...' if len(ids) > 10 else ''}."
        )
    if not ids:
        raise ValueError(f"{os.path.join(root, 'classes.txt')} lists no class.")
    return tuple(row[1] for _, row in rows)


def files(root: str, split: str, classes: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    """Image paths of `split` ("train" or "test") and their 0-based labels, stratified."""
    if split not in SPLITS:
        raise ValueError(f"CUB folder {root} has the splits {SPLITS}; got {split!r}.")
    paths, labels, _, training = _catalogue(root, len(classes))
    keep = np.flatnonzero(training == (split == "train"))
    order = keep[splits.stratified_order(labels[keep])]
    chosen = [paths[i] for i in order]
    missing = [p for p in chosen if not os.path.isfile(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(
            f"CUB folder {root}: images.txt lists {missing[0]}{more}, which does not exist."
        )
    return chosen, labels[order]


def reader(root: str, paths: list[str]):
    """`read(i)`: the `i`-th of `paths` decoded and cropped to its bounding box (uint8)."""
    import tensorflow as tf  # reading the lists (`info`, `files`) needs none; decoding does

    index, _, boxes, _ = _catalogue(root, None)
    position = {path: i for i, path in enumerate(index)}
    table = tf.constant(paths)
    box_table = tf.constant(np.stack([boxes[position[p]] for p in paths]).astype(np.int32))

    def read(i):
        image = folders.decode(tf.io.read_file(table[i]))
        return crop_box(image, box_table[i])

    return read


def crop_box(image: tf.Tensor, box: tf.Tensor) -> tf.Tensor:
    """`image[top:bottom, left:right]` for `box = (top, left, bottom, right)`, kept inside the
    image and at least one pixel high and wide."""
    import tensorflow as tf

    height, width = tf.shape(image)[0], tf.shape(image)[1]
    top = tf.clip_by_value(box[0], 0, height - 1)
    left = tf.clip_by_value(box[1], 0, width - 1)
    bottom = tf.clip_by_value(box[2], top + 1, height)
    right = tf.clip_by_value(box[3], left + 1, width)
    return image[top:bottom, left:right]


# === The files ===


def _catalogue(root: str, num_classes: int | None):
    """Every image of images.txt: paths, 0-based labels, boxes (top, left, bottom, right) and
    whether it is a training image, in images.txt order."""
    images = _table(root, "images.txt", 2)
    ids = [_number(root, "images.txt", n, row[0], int) for n, row in images]
    paths = [os.path.join(root, "images", row[1]) for _, row in images]
    labels = _by_image(root, "image_class_labels.txt", ids, 2, int)[:, 0]
    boxes = _by_image(root, "bounding_boxes.txt", ids, 5, float)
    training = _by_image(root, "train_test_split.txt", ids, 2, int)[:, 0]
    num_classes = len(class_names(root)) if num_classes is None else num_classes
    bad = np.flatnonzero((labels < 1) | (labels > num_classes))
    if len(bad):
        raise ValueError(
            f"{os.path.join(root, 'image_class_labels.txt')}: image {ids[bad[0]]} has class "
            f"{labels[bad[0]]}, not among the {num_classes} classes of classes.txt (1-based)."
        )
    x, y, w, h = boxes.T
    corners = np.rint(np.stack([y, x, y + h, x + w], axis=1)).astype(np.int64)
    return paths, (labels - 1).astype(np.int32), corners, training == 1


def _by_image(root: str, filename: str, ids: list[int], columns: int, kind) -> np.ndarray:
    """The values of `filename` (one row per image id) in the order of `ids`."""
    rows = {}
    for n, row in _table(root, filename, columns):
        image = _number(root, filename, n, row[0], int)
        rows[image] = [_number(root, filename, n, value, kind) for value in row[1:]]
    missing = [i for i in ids if i not in rows]
    if missing:
        raise ValueError(
            f"{os.path.join(root, filename)} has no line for image {missing[0]} of images.txt"
            f"{f' (nor for {len(missing) - 1} more)' if len(missing) > 1 else ''}."
        )
    return np.asarray([rows[i] for i in ids])


def _table(root: str, filename: str, columns: int) -> list[tuple[int, list[str]]]:
    """The non-empty lines of a CUB file as `(line number, fields)`, each with `columns`
    fields (the last may hold spaces)."""
    path = os.path.join(root, filename)
    if not os.path.isfile(path):
        raise ValueError(
            f"CUB-200-2011 folder {root} (it has images.txt) has no {filename}; it needs "
            f"{', '.join(FILES)} and images/."
        )
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            fields = line.strip().split(maxsplit=columns - 1)
            if not fields:
                continue
            if len(fields) != columns:
                raise ValueError(
                    f"{path} line {n}: expected {columns} fields, got {line.strip()!r}."
                )
            rows.append((n, fields))
    return rows


def _number(root: str, filename: str, line: int, text: str, kind):
    try:
        return kind(text)
    except ValueError:
        raise ValueError(
            f"{os.path.join(root, filename)} line {line}: {text!r} is not "
            f"{'an integer' if kind is int else 'a number'}."
        ) from None
