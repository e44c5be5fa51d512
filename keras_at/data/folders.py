"""Image folders: one sub-folder per class, files decoded by TensorFlow, checked once at load.

Two layouts are accepted. A folder of class sub-folders (`root/<class>/<image>`) is the "train"
split. A folder holding a `train/` sub-folder (`root/<split>/<class>/<image>`) has one split per
sub-folder ("train", "val", "test", ...); the classes are those of `train/`. Class order is the
sorted folder names. Files are found at any depth under a class folder, through symlinked
sub-folders too (as Keras's `image_dataset_from_directory(follow_links=True)`); a link back to a
folder already read (a loop) is skipped with a warning. Only the extensions TensorFlow decodes
are read (and hidden files skipped).

A split's files are listed in a stratified order: each class's files (in path order) are spread
evenly over the list, so any contiguous slice (`"train[90%:]"` as a held-out set, or `limit=`)
holds about each class's share of the split instead of the last classes only.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")


def find(name, data_dir=None) -> str | None:
    """The folder that `name` refers to (itself, or relative to `data_dir`), if any."""
    candidates = [os.fspath(name)]
    if data_dir is not None:
        candidates.append(os.path.join(os.fspath(data_dir), os.fspath(name)))
    return next((os.path.abspath(c) for c in candidates if os.path.isdir(c)), None)


def _subdirs(directory: str) -> list[str]:
    names = os.listdir(directory)
    return sorted(d for d in names if not d.startswith(".") and os.path.isdir(f"{directory}/{d}"))


def _has_splits(root: str) -> bool:
    return os.path.isdir(os.path.join(root, "train"))


def class_names(root: str) -> tuple[str, ...]:
    """Sorted class-folder names (those of `train/` when the folder has split sub-folders)."""
    names = _subdirs(os.path.join(root, "train") if _has_splits(root) else root)
    if not names:
        raise ValueError(f"Image folder {root} has no class sub-folders.")
    return tuple(names)


def split_dir(root: str, split: str) -> str:
    """The folder holding the class folders of `split`."""
    if _has_splits(root):
        if split not in _subdirs(root):
            raise ValueError(
                f"Image folder {root} has no {split!r} sub-folder; it has {_subdirs(root)}."
            )
        return os.path.join(root, split)
    if split != "train":
        raise ValueError(
            f"Image folder {root} holds class folders directly, which makes it the 'train' split "
            f"only; for a {split!r} split use {root}/train/<class>/ and {root}/{split}/<class>/."
        )
    return root


def files(root: str, split: str, classes: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    """Image paths of `split` and their labels, in the stratified order of the module doc."""
    directory = split_dir(root, split)
    unknown = sorted(set(_subdirs(directory)) - set(classes))
    if unknown:
        raise ValueError(
            f"Image folder {directory} has class folders {unknown} that are not among the "
            f"classes {list(classes)} of {root}."
        )
    if len(classes) == 1:
        warnings.warn(
            f"Image folder {root} has a single class, {classes[0]!r}: a classifier trained on it "
            "learns nothing. Put each class in its own sub-folder.",
            stacklevel=3,
        )
    paths, labels, positions, empty = [], [], [], []
    for label, name in enumerate(classes):
        found = _images_under(os.path.join(directory, name))
        if not found:
            empty.append(name)
        paths += found
        labels += [label] * len(found)
        # The j-th of n files sits at (j + 0.5) / n of the way through the split.
        positions += [(j + 0.5) / len(found) for j in range(len(found))]
    if empty:
        warnings.warn(
            f"Image folder {directory} has no images of the classes {empty} (empty class "
            f"folders, or no files with the extensions {EXTENSIONS}).",
            stacklevel=3,
        )
    order = np.lexsort((np.asarray(labels), np.asarray(positions)))
    return [paths[i] for i in order], np.asarray(labels, np.int32)[order]


def _images_under(folder: str) -> list[str]:
    """The image files at any depth under `folder`, in path order, following symlinked folders.

    Each real folder is read once: a link to a folder already read, or to an ancestor of
    `folder` (a loop, which would recurse forever or read other classes' images as this one's),
    is skipped, and named in a warning.
    """
    top = os.path.realpath(folder)
    found, seen, skipped = [], {top}, []
    for parent, dirs, names in os.walk(folder, followlinks=True):
        kept = []
        for d in sorted(d for d in dirs if not d.startswith(".")):
            real = os.path.realpath(os.path.join(parent, d))
            if real in seen or top.startswith(os.path.join(real, "")):
                skipped.append(os.path.join(parent, d))
            else:
                seen.add(real)
                kept.append(d)
        dirs[:] = kept
        found += [
            os.path.join(parent, file)
            for file in sorted(names)
            if not file.startswith(".") and file.lower().endswith(EXTENSIONS)
        ]
    if skipped:
        warnings.warn(
            f"Skipping folders that lead to one already read or to an ancestor (symlink loops, "
            f"or two paths to one folder): {skipped}.",
            stacklevel=4,
        )
    return found


def decode(contents: tf.Tensor) -> tf.Tensor:
    """One image file's bytes -> uint8 `(H, W, 3)` (grayscale and RGBA converted to RGB)."""
    import tensorflow as tf  # listing a folder (`info`) needs none; decoding does

    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    return tf.ensure_shape(image, (None, None, 3))


def drop_undecodable(paths: list[str], labels: np.ndarray, root: str):
    """Decodes every file once (in parallel) and drops, with one warning naming them, those
    TensorFlow cannot decode, so a bad file fails here instead of hours into training."""
    import tensorflow as tf

    ok = np.zeros(len(paths), bool)
    if paths:
        table = tf.constant(paths)
        checks = (
            tf.data.Dataset.range(len(paths))
            .map(
                lambda i: (i, tf.shape(decode(tf.io.read_file(table[i])))),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            .ignore_errors()
        )
        for i, _ in checks.as_numpy_iterator():
            ok[i] = True
    bad = [p for p, good in zip(paths, ok, strict=True) if not good]
    if bad:
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        shown = "\n  ".join(bad[:20]) + more
        warnings.warn(
            f"Skipping {len(bad)} of {len(paths)} files in {root} that cannot be decoded as "
            f"images:\n  {shown}",
            stacklevel=3,
        )
    if not ok.any():
        raise ValueError(f"No decodable images in {root} for this split.")
    return [p for p, good in zip(paths, ok, strict=True) if good], labels[ok]
