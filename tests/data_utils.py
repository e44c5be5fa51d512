"""Writers of small, real dataset files in the formats keras_at.data reads, for tests."""

from __future__ import annotations

import gzip
import os
import pickle
import tarfile

import numpy as np

CIFAR_LAYOUT = {
    # name: (folder, tarball, {split: files}, label key)
    "cifar10": (
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
        b"labels",
    ),
    "cifar100": (
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        {"train": ["train"], "test": ["test"]},
        b"fine_labels",
    ),
}


def write_idx(path, array: np.ndarray) -> None:
    """An IDX file (gzipped when `path` ends in .gz): magic 2049 for 1-D, 2051 for 3-D uint8."""
    header = (0x800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def write_mnist_like(directory, sizes=None, seed=0):
    """The four {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz files; returns the arrays."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        n = (sizes or {"train": 20, "test": 10})[split]
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), images)
        write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), labels)
        arrays[split] = (images[..., None], labels)
    return arrays


def write_cifar(directory, name="cifar10", per_file=3, seed=0, image=None):
    """CIFAR's python-pickle folder (`cifar-10-batches-py/` or `cifar-100-python/`) inside
    `directory`, with `per_file` random images per pickle (or copies of `image`, (32, 32, 3)).
    Returns `{split: (images NHWC, labels)}` in file order."""
    folder, _, files, label_key = CIFAR_LAYOUT[name]
    os.makedirs(os.path.join(directory, folder), exist_ok=True)
    rng = np.random.default_rng(seed)
    num_classes = 10 if name == "cifar10" else 100
    arrays = {}
    for split, names in files.items():
        chunks = []
        for file in names:
            if image is None:
                images = rng.integers(0, 256, (per_file, 32, 32, 3), dtype=np.uint8)
            else:
                images = np.repeat(image[None], per_file, axis=0)
            labels = rng.integers(0, num_classes, per_file)
            # CIFAR's row layout: 1024 red, then 1024 green, then 1024 blue values.
            rows = images.transpose(0, 3, 1, 2).reshape(per_file, 3072)
            batch = {b"data": rows, label_key: [int(v) for v in labels], b"filenames": []}
            if name == "cifar100":
                batch[b"coarse_labels"] = [int(v) // 5 for v in labels]
            with open(os.path.join(directory, folder, file), "wb") as f:
                pickle.dump(batch, f, protocol=2)
            chunks.append((images, labels))
        arrays[split] = tuple(np.concatenate(parts) for parts in zip(*chunks, strict=True))
    return arrays


def tar_cifar(directory, name="cifar10") -> str:
    """Packs the folder written by `write_cifar` into CIFAR's tarball, next to it."""
    folder, tarball, _, _ = CIFAR_LAYOUT[name]
    path = os.path.join(directory, tarball)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(os.path.join(directory, folder), arcname=folder)
    return path


CUB_CLASSES = ("001.Red_bird", "002.Green_bird", "003.Blue_bird")
CUB_COLOURS = ((200, 0, 0), (0, 200, 0), (0, 0, 200))
# image id: (class id, 1 = train, image (width, height), box (x, y, width, height))
CUB_IMAGES = {
    1: (2, 1, (40, 30), (5, 4, 20, 12)),
    2: (1, 0, (36, 48), (20, 30, 10, 14)),
    3: (3, 1, (50, 40), (30, 2, 16, 30)),
    4: (1, 1, (44, 44), (0, 0, 12, 20)),
    5: (3, 0, (30, 30), (10, 10, 18, 8)),
    6: (2, 0, (60, 20), (40, 5, 14, 12)),
    7: (1, 1, (32, 32), (8, 8, 16, 16)),
}


def write_cub(root):
    """A CUB-200-2011 folder in the dataset's own format: every image grey with its bounding box
    filled by its class colour (train images) or half that colour (test images)."""
    from PIL import Image

    lines = {name: [] for name in ("images", "image_class_labels", "bounding_boxes",
                                   "train_test_split")}
    for image_id, (class_id, train, (width, height), (x, y, w, h)) in CUB_IMAGES.items():
        name = f"{CUB_CLASSES[class_id - 1]}/img_{image_id:03d}.jpg"
        image = np.full((height, width, 3), 90, np.uint8)
        image[y : y + h, x : x + w] = np.multiply(CUB_COLOURS[class_id - 1], 1 if train else 0.5)
        (root / "images" / CUB_CLASSES[class_id - 1]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / name, quality=100, subsampling=0)
        lines["images"].append(f"{image_id} {name}")
        lines["image_class_labels"].append(f"{image_id} {class_id}")
        lines["bounding_boxes"].append(f"{image_id} {x:.1f} {y:.1f} {w:.1f} {h:.1f}")
        lines["train_test_split"].append(f"{image_id} {train}")
    lines["classes"] = [f"{i} {name}" for i, name in enumerate(CUB_CLASSES, start=1)]
    for name, rows in lines.items():
        (root / f"{name}.txt").write_text("\n".join(rows) + "\n")
    return root
