"""Finding and reading the named datasets' files, local copies first, download last.

Each reader returns `{split: (images, labels)}` with uint8 images `(N, H, W, C)` and int32 labels
in source-file order. Lookup order (the first place holding a usable copy wins):

1. `data_dir`, and its sub-folder named like the dataset: CIFAR's python-pickle tarball or
   extracted folder, IDX `.gz` files, `mnist.npz`, or a TFDS data dir holding the dataset.
2. The Keras cache, `$KERAS_HOME/datasets` (default `~/.keras/datasets`), where
   `keras.datasets.*.load_data()` stores its downloads.
3. Debian's `/usr/share/datasets/fashion-mnist` (`apt-get install dataset-fashion-mnist`).
4. The TFDS data dir, `$TFDS_DATA_DIR` (default `~/tensorflow_datasets`).
5. Download through `keras.datasets`, unless the environment sets `KERAS_AT_OFFLINE=1`.

Pickles are unpickled only from these places, by an unpickler that refuses every global except
numpy's array reconstruction, so a file planted there cannot run code.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import io
import os
import pickle
import tarfile
from collections.abc import Callable, Iterable

import numpy as np

OFFLINE_ENV = "KERAS_AT_OFFLINE"

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]
# A format looks at one directory for the given splits; it returns a reader or None.
Format = Callable[[str, str, Iterable[str]], Callable[[], Arrays] | None]


def offline() -> bool:
    """Whether downloads are disabled by `KERAS_AT_OFFLINE`."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def keras_datasets_dir() -> str:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "datasets")


def tfds_dir() -> str:
    default = os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
    return os.environ.get("TFDS_DATA_DIR") or default


# === IDX (MNIST, Fashion-MNIST) ===

_IDX_PREFIX = {"train": "train", "test": "t10k"}


def _open_maybe_gz(path: str) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_idx(path: str, magic: int) -> np.ndarray:
    """Reads an IDX file (optionally gzipped), checking its magic number and size."""
    try:
        with _open_maybe_gz(path) as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"Corrupt IDX file {path}: {e}") from e
    if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
        found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
        raise ValueError(f"Corrupt IDX file {path}: magic number {found}, expected {magic}.")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(shape)):
        raise ValueError(
            f"Corrupt IDX file {path}: header says shape {shape}, i.e. "
            f"{header + int(np.prod(shape))} bytes, but the file has {len(data)}."
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _idx_format(directory, name, splits):
    paths = {}
    for split in splits:
        for kind in ("images-idx3", "labels-idx1"):
            stem = os.path.join(directory, f"{_IDX_PREFIX[split]}-{kind}-ubyte")
            found = [p for p in (stem + ".gz", stem) if os.path.isfile(p)]
            if not found:
                return None
            paths[split, kind] = found[0]

    def read():
        out = {}
        for split in splits:
            images = read_idx(paths[split, "images-idx3"], 2051)
            labels = read_idx(paths[split, "labels-idx1"], 2049)
            if images.shape[1:] != (28, 28):
                raise ValueError(
                    f"Unexpected IDX file {paths[split, 'images-idx3']}: images of shape "
                    f"{images.shape[1:]}, expected 28x28."
                )
            if len(images) != len(labels):
                raise ValueError(
                    f"IDX files {paths[split, 'images-idx3']} and {paths[split, 'labels-idx1']} "
                    f"disagree: {len(images)} images, {len(labels)} labels."
                )
            out[split] = _checked(images[..., None], labels, 10, paths[split, "labels-idx1"])
        return out

    return read


def _npz_format(directory, name, splits):
    path = os.path.join(directory, f"{name}.npz")
    if not os.path.isfile(path):
        return None

    def read():
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {s: (f[f"x_{s}"], f[f"y_{s}"]) for s in splits}
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"Corrupt {name} file {path}: {e}") from e
        return {s: _checked(x[..., None], y, 10, path) for s, (x, y) in arrays.items()}

    return read


# === CIFAR python pickles ===

_CIFAR = {
    # name: (tarball, folder in it, train files, test files, label key)
    "cifar10": (
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        b"labels",
    ),
    "cifar100": (
        "cifar-100-python.tar.gz",
        "cifar-100-python",
        ["train"],
        ["test"],
        b"fine_labels",
    ),
}


class _ArrayUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(data: bytes, where: str, label_key: bytes, num_classes: int):
    """Decodes one CIFAR pickle (a dict of `data` rows of 3072 bytes, R then G then B planes)."""
    try:
        batch = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
        images = np.asarray(batch[b"data"])
        labels = np.asarray(batch[label_key])
    except Exception as e:  # any failure to decode is a corrupt file, whatever raised it
        raise ValueError(f"Corrupt CIFAR pickle {where}: {type(e).__name__}: {e}") from e
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"Corrupt CIFAR pickle {where}: data has dtype {images.dtype} and shape "
            f"{images.shape}, expected uint8 (N, 3072)."
        )
    images = images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return _checked(images, labels, num_classes, where)


def _cifar_format(directory, name, splits):
    tarball, folder, train_files, test_files, label_key = _CIFAR[name]
    files = {"train": train_files, "test": test_files}
    wanted = [f for s in splits for f in files[s]]
    for candidate in (directory, os.path.join(directory, folder)):
        if all(os.path.isfile(os.path.join(candidate, f)) for f in wanted):

            def fetch(file, candidate=candidate):
                path = os.path.join(candidate, file)
                with open(path, "rb") as f:
                    return f.read(), path

            break
    else:
        path = directory if directory.endswith(tarball) else os.path.join(directory, tarball)
        if not os.path.isfile(path):
            return None

        def fetch(file, path=path):
            where = f"{path}:{folder}/{file}"
            try:
                with tarfile.open(path, "r:gz") as tar:
                    member = tar.extractfile(f"{folder}/{file}")
                    if member is None:
                        raise KeyError(f"{folder}/{file} is not a file")
                    return member.read(), where
            except (OSError, EOFError, KeyError, tarfile.TarError) as e:
                raise ValueError(f"Corrupt CIFAR tarball {where}: {e}") from e

    num_classes = 10 if name == "cifar10" else 100

    def read():
        out = {}
        for split in splits:
            parts = [read_cifar_batch(*fetch(f), label_key, num_classes) for f in files[split]]
            out[split] = tuple(np.concatenate(arrays) for arrays in zip(*parts, strict=True))
        return out

    return read


# === TFDS ===

def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(x) if x.isdigit() else -1 for x in version.split("."))


def _tfds_format(directory, name, splits):
    # keras_at's names are TFDS's names; TFDS keeps `<data_dir>/<name>/<version>/`.
    root = os.path.join(directory, name)
    versions = [
        v
        for v in (os.listdir(root) if os.path.isdir(root) else [])
        if os.path.isfile(os.path.join(root, v, "dataset_info.json"))
    ]
    if not versions:
        return None
    version = max(versions, key=_version_key)

    def read():
        try:
            import tensorflow_datasets as tfds
        except ModuleNotFoundError as error:
            raise ImportError(
                f"{name!r} was found as a TFDS directory, {os.path.join(root, version)}, which "
                "only tensorflow-datasets reads (it needs TensorFlow; `pip install "
                f"tensorflow-datasets`). Without it, {_SOURCES[name].how}."
            ) from error

        builder = tfds.builder(f"{name}:{version}", data_dir=directory)
        num_classes = builder.info.features["label"].num_classes
        out = {}
        for split in splits:
            data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
            where = os.path.join(root, version)
            out[split] = _checked(data["image"], data["label"], num_classes, where)
        return out

    return read


# === Lookup ===


@dataclasses.dataclass(frozen=True)
class _Source:
    formats: tuple[Format, ...]
    keras_dirs: tuple[str, ...]  # under the Keras datasets dir ("" is that dir itself)
    system_dirs: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()  # sub-folders of data_dir searched besides data_dir/<name>
    how: str = ""  # how to provide the files by hand


_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"
_SOURCES = {
    "cifar10": _Source(
        (_cifar_format, _tfds_format), ("cifar-10-batches-py-target", ""),
        how=f"put cifar-10-python.tar.gz ({_CIFAR_URL}cifar-10-python.tar.gz) or its extracted "
        "cifar-10-batches-py/ in data_dir",
    ),
    "cifar100": _Source(
        (_cifar_format, _tfds_format), ("cifar-100-python-target", ""),
        how=f"put cifar-100-python.tar.gz ({_CIFAR_URL}cifar-100-python.tar.gz) or its extracted "
        "cifar-100-python/ in data_dir",
    ),
    "fashion_mnist": _Source(
        (_idx_format, _tfds_format), ("fashion-mnist",), ("/usr/share/datasets/fashion-mnist",),
        aliases=("fashion-mnist",),
        how="`apt-get install dataset-fashion-mnist`, or put the four "
        "{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz files in data_dir",
    ),
    "mnist": _Source(
        (_idx_format, _npz_format, _tfds_format), ("",),
        how="put mnist.npz or the four {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz files "
        "in data_dir",
    ),
}


def places(name: str, data_dir: str | None = None) -> list[str]:
    """The directories searched for `name`, in order."""
    source = _SOURCES[name]
    found = []
    if data_dir is not None:
        data_dir = os.fspath(data_dir)
        found += [data_dir] + [os.path.join(data_dir, d) for d in (name, *source.aliases)]
    found += [os.path.join(keras_datasets_dir(), d) for d in source.keras_dirs]
    found += [*source.system_dirs, tfds_dir()]
    return [os.path.normpath(p) for p in dict.fromkeys(found)]


def read(name: str, splits: Iterable[str], data_dir: str | None = None) -> Arrays:
    """`{split: (images, labels)}` of a known dataset, from the first place that has it."""
    splits = list(splits)
    if name == "digits":
        return {split: digits_arrays()[split] for split in splits}
    source = _SOURCES[name]
    searched = places(name, data_dir)
    for place in searched:
        for fmt in source.formats:
            reader = fmt(place, name, splits)
            if reader is not None:
                return reader()
    if offline():
        download = f"download disabled by {OFFLINE_ENV}={os.environ[OFFLINE_ENV]}"
    else:
        try:
            return _download(name, splits)
        except Exception as e:  # the message below names it; any failure means "not found"
            download = f"download failed: {type(e).__name__}: {e}"
    raise FileNotFoundError(
        f"Dataset {name!r} not found. Looked in:\n"
        + "".join(f"  {p}\n" for p in searched)
        + f"and {download}.\nTo provide it offline, {source.how}."
    )


def _download(name, splits) -> Arrays:
    import keras

    (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    arrays = {"train": (x_train, y_train), "test": (x_test, y_test)}
    num_classes = 100 if name == "cifar100" else 10
    out = {}
    for split in splits:
        images, labels = arrays[split]
        images = images[..., None] if images.ndim == 3 else images
        out[split] = _checked(images, labels, num_classes, f"keras.datasets.{name}")
    return out


def _checked(images, labels, num_classes: int, where: str):
    """Labels as int32 in [0, num_classes), one per image; anything else is a corrupt file."""
    images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"Corrupt data in {where}: images {images.dtype} {images.shape}.")
    if len(labels) != len(images):
        raise ValueError(f"Corrupt data in {where}: {len(images)} images, {len(labels)} labels.")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"Corrupt data in {where}: labels span [{labels.min()}, {labels.max()}], "
            f"expected [0, {num_classes - 1}]."
        )
    return images, labels.astype(np.int32)


# === scikit-learn digits ===

# scikit-learn's 8x8 images upsampled to 32x32, the input size of the CIFAR models; the first
# 80% of the examples (source order) are "train", the rest "test".
DIGITS_SIZE = (32, 32)
DIGITS_TRAIN_FRACTION = 0.8


@functools.lru_cache(maxsize=1)
def digits_arrays() -> Arrays:
    """scikit-learn's 1797 digits (8x8, values 0..16) as uint8 32x32 images, bilinearly
    upsampled; the first 80% in source order are the train split, the rest the test split."""
    from sklearn.datasets import load_digits

    from keras_at.data.augment_numpy import resize

    digits = load_digits()
    small = digits.images[..., None].astype(np.float32) * (255 / 16)
    images = resize(small, DIGITS_SIZE)  # the pixels of tf.image.resize(..., "bilinear")
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int32)
    n_train = int(len(images) * DIGITS_TRAIN_FRACTION)
    return {
        "train": (images[:n_train], labels[:n_train]),
        "test": (images[n_train:], labels[n_train:]),
    }
