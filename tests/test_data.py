"""keras_at.data on real files: Debian's Fashion-MNIST, scikit-learn digits, and CIFAR pickles,
IDX files, image folders and a TFDS directory written by the tests. Nothing is downloaded:
KERAS_AT_OFFLINE is set and the Keras and TFDS caches point at empty folders."""

import gzip
import importlib.resources
import json
import os
import pickle
import socket
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from data_utils import (
    CUB_CLASSES,
    CUB_COLOURS,
    CUB_IMAGES,
    tar_cifar,
    write_cifar,
    write_cub,
    write_mnist_like,
)
from PIL import Image
from sklearn.datasets import load_digits

from keras_at import data
from keras_at.data import Augmentation, augment_numpy, sources, splits
from keras_at.data.augment import cover

DEBIAN = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_AT_OFFLINE", "1")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))


def collect(dataset):
    """All batches of a dataset (tf.data, or one epoch of an ArrayDataset) as (images, labels)
    numpy arrays."""
    images, labels = zip(*[(np.asarray(x), np.asarray(y)) for x, y in dataset], strict=True)
    return np.concatenate(images), np.concatenate(labels)


def pixels(images, name):
    """Undoes the normalisation: back to 0..255."""
    info = data.info(name)
    return (images * np.asarray(info.std) + np.asarray(info.mean)) * 255


def raw_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


# === Fashion-MNIST from Debian's dataset-fashion-mnist ===

needs_debian = pytest.mark.skipif(
    not os.path.isdir(DEBIAN) and not os.environ.get("CI"),
    reason="apt-get install dataset-fashion-mnist (CI installs it, so there this fails instead)",
)


@needs_debian
def test_fashion_mnist_test_split_matches_raw_idx_files():
    images, labels = collect(data.load("fashion_mnist", "test", batch_size=500, limit=2000))
    assert images.shape == (2000, 28, 28, 1) and images.dtype == np.float32
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, raw_idx(f"{DEBIAN}/t10k-labels-idx1-ubyte.gz")[:2000])
    raw = raw_idx(f"{DEBIAN}/t10k-images-idx3-ubyte.gz")[:2000, :, :, None]
    np.testing.assert_allclose(pixels(images, "fashion_mnist"), raw, atol=1e-3)


@needs_debian
def test_fashion_mnist_train_is_normalised_and_shuffled():
    dataset = data.load("fashion_mnist", "train[:3000]", batch_size=1000, augment=False, seed=0)
    images, labels = collect(dataset)
    assert abs(images.mean()) < 0.05 and abs(images.std() - 1) < 0.05
    source = raw_idx(f"{DEBIAN}/train-labels-idx1-ubyte.gz")[:3000]
    assert not np.array_equal(labels, source)  # train is shuffled by default
    np.testing.assert_array_equal(np.sort(labels), np.sort(source))


# === scikit-learn digits ===


def test_digits_split_is_first_80_percent_upsampled_to_32():
    target = load_digits().target
    train_images, train_labels = collect(data.load("digits", shuffle=False, augment=False))
    test_images, test_labels = collect(data.load("digits", "test"))
    assert train_images.shape == (1437, 32, 32, 1) and test_images.shape == (360, 32, 32, 1)
    np.testing.assert_array_equal(train_labels, target[:1437])
    np.testing.assert_array_equal(test_labels, target[1437:])
    assert abs(train_images.mean()) < 1e-3 and abs(train_images.std() - 1) < 1e-3
    info = data.info("digits")
    assert info.image_shape == (32, 32, 1) and info.num_classes == 10
    assert not info.augmentation.flip  # a flipped digit is another digit


def test_image_size_resizes():
    images, _ = next(iter(data.load("digits", "test", image_size=(8, 12), batch_size=4)))
    assert images.shape == (4, 8, 12, 1)
    images, _ = next(iter(data.load("digits", "test", image_size=20, batch_size=4)))
    assert images.shape == (4, 20, 20, 1)


# === Split slicing and limit ===


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("train[:10%]", slice(0, 144)),
        ("train[-5:]", slice(1432, 1437)),
        ("train[100:110]", slice(100, 110)),
        ("train[90%:]", slice(1293, 1437)),
    ],
)
def test_slicing(spec, expected):
    _, labels = collect(data.load("digits", spec, shuffle=False))
    np.testing.assert_array_equal(labels, load_digits().target[expected])


def test_union_of_splits():
    _, labels = collect(data.load("digits", "train[:5]+test[-3:]", shuffle=False))
    target = load_digits().target
    np.testing.assert_array_equal(labels, np.concatenate([target[:5], target[-3:]]))


@pytest.mark.parametrize("spec", ["train[:90%]", "train[33%:-7%]", "test[-12.5%:]", "train[5:-5]"])
def test_slicing_matches_tfds(spec):
    tfds = pytest.importorskip("tensorflow_datasets")
    sizes = {"train": 1437, "test": 360}
    infos = {name: type("SplitInfo", (), {"num_examples": n}) for name, n in sizes.items()}
    (absolute,) = tfds.core.ReadInstruction.from_spec(spec).to_absolute(infos)
    ((name, positions),) = splits.select(splits.parse(spec), sizes)
    assert name == absolute.splitname
    assert range(sizes[name])[positions] == range(sizes[name])[absolute.from_ : absolute.to]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("train[:200%]", "out of range"),
        ("validation", "has splits"),
        ("train[:5", "Unrecognised split"),
        ("train[1:50%]", "mixes percents"),
        ("train[10:10]", "selects no examples"),
    ],
)
def test_bad_splits(spec, message):
    with pytest.raises(ValueError, match=message):
        data.load("digits", spec)


def test_limit_keeps_first_examples_before_shuffling():
    dataset = data.load("digits", limit=50, batch_size=16, seed=1)
    assert dataset.cardinality() == 4
    _, labels = collect(dataset)
    source = load_digits().target[:50]
    assert not np.array_equal(labels, source)
    np.testing.assert_array_equal(np.sort(labels), np.sort(source))


# === CIFAR python pickles ===


@pytest.mark.parametrize("form", ["folder", "parent", "tarball", "tarball_path"])
def test_cifar10_pickles_in_data_dir(tmp_path, form):
    expected = write_cifar(tmp_path)
    data_dir = {
        "folder": tmp_path / "cifar-10-batches-py",
        "parent": tmp_path,
        "tarball": tmp_path,
        "tarball_path": tmp_path / "cifar-10-python.tar.gz",
    }[form]
    if form.startswith("tarball"):
        tar_cifar(tmp_path)
        (tmp_path / "cifar-10-batches-py").rename(tmp_path / "moved")
    for split in ("train", "test"):
        images, labels = collect(
            data.load("cifar10", split, data_dir=data_dir, shuffle=False, augment=False)
        )
        assert images.shape == (len(expected[split][1]), 32, 32, 3)
        np.testing.assert_array_equal(labels, expected[split][1])
        np.testing.assert_allclose(pixels(images, "cifar10"), expected[split][0], atol=1e-3)


def test_cifar100_reads_fine_labels(tmp_path):
    expected = write_cifar(tmp_path, "cifar100", per_file=7)
    _, labels = collect(data.load("cifar100", "test", data_dir=tmp_path))
    np.testing.assert_array_equal(labels, expected["test"][1])
    info = data.info("cifar100")
    assert info.num_classes == len(info.class_names) == 100
    assert list(info.class_names) == sorted(info.class_names)  # CIFAR-100's label order


def test_cifar_from_keras_cache_and_data_dir_first(tmp_path):
    cache = tmp_path / "keras_home" / "datasets" / "cifar-10-batches-py-target"
    cached = write_cifar(cache, seed=1)
    _, labels = collect(data.load("cifar10", "test", shuffle=False))
    np.testing.assert_array_equal(labels, cached["test"][1])
    mine = write_cifar(tmp_path / "mine", seed=2)
    _, labels = collect(data.load("cifar10", "test", data_dir=tmp_path / "mine"))
    np.testing.assert_array_equal(labels, mine["test"][1])


def test_corrupt_cifar_pickles_are_named(tmp_path):
    write_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="Corrupt CIFAR pickle .*data_batch_3"):
        data.load("cifar10", data_dir=tmp_path)
    with open(batch, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match="data_batch_3.*shape"):
        data.load("cifar10", data_dir=tmp_path)


class _Planted:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_cifar_pickle_cannot_run_code(tmp_path, capsys):
    write_cifar(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": _Planted(), b"labels": []}, f)
    with pytest.raises(ValueError, match="refusing to load global builtins.print"):
        data.load("cifar10", "test", data_dir=tmp_path)
    assert "must never run" not in capsys.readouterr().out


# === IDX files and TFDS directories ===


def test_idx_files_in_data_dir_win_over_debian(tmp_path):
    expected = write_mnist_like(tmp_path / "fashion-mnist")
    images, labels = collect(data.load("fashion_mnist", data_dir=tmp_path, shuffle=False))
    np.testing.assert_array_equal(labels, expected["train"][1])
    assert images.shape == (20, 28, 28, 1)


def _idx_header(magic, *shape):
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in shape)


@pytest.mark.parametrize(
    "content, message",
    [
        (_idx_header(2052, 20, 28, 28) + bytes(20 * 28 * 28), "magic number 2052, expected 2051"),
        (_idx_header(2051, 20, 28, 28) + bytes(50), "header says shape"),
        (_idx_header(2051, 20, 28, 27) + bytes(20 * 28 * 27), "expected 28x28"),
        (_idx_header(2051, 5, 28, 28) + bytes(5 * 28 * 28), "5 images, 20 labels"),
        (b"\x00\x00", "magic number None"),
    ],
)
def test_corrupt_idx_files_are_named(tmp_path, content, message):
    write_mnist_like(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(content))
    with pytest.raises(ValueError, match=f"train-images-idx3-ubyte.gz.*{message}"):
        data.load("mnist", data_dir=tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(content)  # not gzip at all
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        data.load("mnist", data_dir=tmp_path)


def test_mnist_npz_in_data_dir(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 6).astype(np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    images, labels = collect(data.load("mnist", data_dir=tmp_path, shuffle=False, augment=False))
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_allclose(pixels(images, "mnist"), x[..., None], atol=1e-3)


def test_tfds_data_dir(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    from tensorflow_datasets.core.dataset_builders.adhoc_builder import store_as_tfds_dataset

    # TFDS's writer imports importlib_resources, a backport that the standard library covers.
    try:
        import importlib_resources  # noqa: F401
    except ImportError:
        monkeypatch.setitem(sys.modules, "importlib_resources", importlib.resources)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (9, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, 9)
    def split(n):
        return tf.data.Dataset.from_tensor_slices({"image": x[:n], "label": y[:n]})

    store_as_tfds_dataset(
        name="mnist",
        version="3.0.1",
        features=tfds.builder("mnist").info.features,
        split_datasets={"train": split(9), "test": split(2)},
        data_dir=tmp_path / "tfds",
        disable_shuffling=True,
    )
    images, labels = collect(data.load("mnist", "train[2:]", shuffle=False, augment=False))
    np.testing.assert_array_equal(labels, y[2:])
    np.testing.assert_allclose(pixels(images, "mnist"), x[2:], atol=1e-3)


# === Image folders ===


def _save(path, colour, size, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def test_image_folder_skips_broken_file_with_warning(tmp_path):
    root = tmp_path / "pets"
    _save(root / "cat" / "a.png", (255, 0, 0), (40, 30))
    _save(root / "cat" / "b.jpg", (250, 0, 0), (64, 64))
    _save(root / "cat" / "nested" / "c.png", 128, (10, 20), mode="L")
    _save(root / "dog" / "d.bmp", (0, 0, 255), (33, 17))
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "dog" / "notes.txt").write_text("not an image, not an image extension")
    with pytest.warns(UserWarning, match="broken.png") as record:
        dataset = data.load(root, batch_size=8, shuffle=False, augment=False, image_size=16)
    assert len(record) == 1
    images, labels = collect(dataset)
    assert images.shape == (4, 16, 16, 3)
    # Stratified order: cat's a, b, nested/c at 1/6, 3/6, 5/6; dog's broken, d at 1/4, 3/4.
    np.testing.assert_array_equal(labels, [0, 0, 1, 0])
    restored = pixels(images, str(root))
    np.testing.assert_allclose(restored[0], np.broadcast_to([255, 0, 0], (16, 16, 3)), atol=1)
    np.testing.assert_allclose(restored[3], np.full((16, 16, 3), 128), atol=1)  # gray -> RGB
    np.testing.assert_allclose(restored[2], np.broadcast_to([0, 0, 255], (16, 16, 3)), atol=1)
    info = data.info(root)
    assert info.class_names == ("cat", "dog") and info.image_shape == (224, 224, 3)
    with warnings.catch_warnings(record=True):
        images, _ = next(iter(data.load(root, batch_size=2, seed=0)))  # augmented, 224 default
    assert images.shape == (2, 224, 224, 3)


def test_image_folder_split_subfolders(tmp_path):
    for split, count in (("train", 3), ("val", 2)):
        for cls in ("a", "b"):
            for i in range(count):
                _save(tmp_path / "ds" / split / cls / f"{i}.png", (i * 40, 0, 0), (8, 8))
    _, labels = collect(data.load(tmp_path / "ds", "val", image_size=8))
    np.testing.assert_array_equal(labels, [0, 1, 0, 1])  # stratified: classes interleaved
    _, labels = collect(data.load("ds", "train[-2:]", data_dir=tmp_path, image_size=8))
    np.testing.assert_array_equal(np.sort(labels), [0, 1])  # the last file of each class
    with pytest.raises(ValueError, match="no 'test' sub-folder"):
        data.load(tmp_path / "ds", "test")
    with pytest.raises(ValueError, match="'train' split only"):
        data.load(tmp_path / "ds" / "val", "test")


def test_image_folder_holdout_slices_are_stratified(tmp_path):
    sizes = {"ant": 4, "bee": 8, "cow": 28}  # 40 files, classes of unequal size
    for cls, count in sizes.items():
        for i in range(count):
            _save(tmp_path / "zoo" / cls / f"{i:02d}.png", (i, 0, 0), (4, 4))
    counts = {}
    for split in ("train[:75%]", "train[75%:]"):
        _, labels = collect(data.load(tmp_path / "zoo", split, image_size=4, shuffle=False))
        counts[split] = np.bincount(labels, minlength=3)
    np.testing.assert_array_equal(counts["train[75%:]"], [1, 2, 7])  # a quarter of each class
    np.testing.assert_array_equal(counts["train[:75%]"], [3, 6, 21])
    _, labels = collect(data.load(tmp_path / "zoo", limit=10, image_size=4, shuffle=False))
    assert set(labels) == {0, 1, 2}


def test_image_folder_follows_symlinked_folders_and_skips_loops(tmp_path):
    root = tmp_path / "pets"
    _save(root / "cat" / "a.png", (255, 0, 0), (8, 8))
    _save(root / "dog" / "d.png", (0, 0, 255), (8, 8))
    _save(tmp_path / "elsewhere" / "b.png", (250, 0, 0), (8, 8))
    _save(tmp_path / "elsewhere" / "deeper" / "c.png", (245, 0, 0), (8, 8))
    (root / "cat" / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "cat" / "loop").symlink_to(root / "cat", target_is_directory=True)
    (root / "cat" / "up").symlink_to(root, target_is_directory=True)  # would read dog as cat
    with pytest.warns(UserWarning, match="Skipping folders") as record:
        images, labels = collect(data.load(root, image_size=8, shuffle=False, augment=False))
    assert len(record) == 1
    assert str(root / "cat" / "loop") in str(record[0].message)
    assert str(root / "cat" / "up") in str(record[0].message)
    np.testing.assert_array_equal(np.bincount(labels), [3, 1])  # a, more/b, more/deeper/c
    reds = sorted(pixels(images, str(root))[labels == 0][:, 0, 0, 0].round())
    np.testing.assert_allclose(reds, [245, 250, 255], atol=1)


# === Evaluation transform and CUB-200-2011 ===


def test_image_folder_evaluation_is_short_side_256_then_centre_crop_224(tmp_path):
    """A 300x200 (width x height) image: shorter side 200 -> 256 (so 384x256), then the central
    224x224 window, rows 16..240 and columns 80..304 of the rescaled image; not a squash."""
    rows, cols = np.mgrid[0:200, 0:300]
    image = np.stack([cols * 0.8, rows * 1.2, np.full_like(cols, 90)], -1)  # linear ramps
    for split in ("train", "test"):
        for cls in ("a", "b"):
            _save(tmp_path / "ds" / split / cls / "0.png", 0, (1, 1))
            Image.fromarray(np.round(image).astype(np.uint8)).save(
                tmp_path / "ds" / split / cls / "0.png")
    for split, augment in (("test", None), ("train", False)):
        images, _ = collect(data.load(tmp_path / "ds", split, augment=augment, shuffle=False))
        assert images.shape == (2, 224, 224, 3)
        restored = pixels(images[0], str(tmp_path / "ds"))
        # Output pixel (i, j) samples source pixel ((i + 16 + 0.5) / 1.28 - 0.5) etc.
        i = np.arange(224)
        source_rows = (i + 16 + 0.5) / 1.28 - 0.5
        source_cols = (i + 80 + 0.5) / 1.28 - 0.5
        np.testing.assert_allclose(restored[:, 100, 1], source_rows * 1.2, atol=1.0)
        np.testing.assert_allclose(restored[100, :, 0], source_cols * 0.8, atol=1.0)
        np.testing.assert_allclose(restored[..., 2], 90, atol=1.0)
    # Other sizes in proportion: shorter side round(256 / 224 * 32) = 37, so 56x37 (300 * 0.185
    # = 55.5 rounds to 56), and the 32x32 window starts at row 2, column 12.
    images, _ = collect(data.load(tmp_path / "ds", "test", image_size=32, shuffle=False))
    corner = pixels(images[0], str(tmp_path / "ds"))[0, 0, :2]
    np.testing.assert_allclose(corner, [((12 + 0.5) * 300 / 56 - 0.5) * 0.8,
                                        ((2 + 0.5) * 200 / 37 - 0.5) * 1.2], atol=0.5)


def test_scale_short_augmentation_is_a_window_of_the_rescaled_image():
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    aug = Augmentation(pad=0, scale_short=256 / 224, flip=False)
    covered = cover(tf.constant(image), (8, 8), 256 / 224).numpy()
    assert covered.shape == (9, 14, 3)  # shorter side round(256 / 224 * 8) = 9
    windows = np.stack([covered[t : t + 8, c : c + 8] for t in range(2) for c in range(7)])
    found = set()
    for seed in range(12):
        out = aug(tf.constant(image), tf.constant([seed, 1]), (8, 8)).numpy()
        match = np.flatnonzero(np.abs(windows - out).reshape(14, -1).max(1) < 1e-4)
        assert len(match) >= 1
        found.add(int(match[0]))
    assert len(found) > 1  # random windows, not always the same one
    with pytest.raises(ValueError, match="scale_short"):
        Augmentation(scale_short=0.5)


def test_cub_crops_bounding_boxes_with_splits_and_labels_from_its_files(tmp_path):
    root = write_cub(tmp_path / "CUB_200_2011")
    info = data.info(root)
    assert info.num_classes == 3 and info.class_names == CUB_CLASSES
    assert info.augmentation == Augmentation(pad=0, scale_short=256 / 224)
    expected_counts = {"train": 4, "test": 3}
    for split, shade in (("train", 1.0), ("test", 0.5)):
        for augment in (None, True):
            dataset = data.load("CUB_200_2011", split, data_dir=tmp_path, image_size=16,
                                augment=augment, seed=0, batch_size=8)
            images, labels = collect(dataset)
            assert images.shape == (expected_counts[split], 16, 16, 3)
            restored = pixels(images, str(root))
            for image, label in zip(restored, labels, strict=True):
                # Only the box is left: every pixel has the colour of the image's own label (the
                # grey 90 around the box would be 90 away; JPEG rings a few levels at its edges).
                error = np.abs(image - np.multiply(CUB_COLOURS[label], shade))
                assert error.max() < 15 and error.mean() < 2, (split, label, error.max())
        ids = [i for i, (_, train, _, _) in CUB_IMAGES.items() if train == (split == "train")]
        assert sorted(labels) == sorted(CUB_IMAGES[i][0] - 1 for i in ids)  # 1-based -> 0-based
    _, labels = collect(data.load(root, "test", shuffle=False, image_size=8))
    np.testing.assert_array_equal(labels, [0, 1, 2])  # stratified: the classes interleaved


def test_cub_missing_or_corrupt_files_are_named(tmp_path):
    root = write_cub(tmp_path / "cub")
    good = {name: (root / name).read_text() for name in os.listdir(root) if name.endswith("txt")}

    def broken(name, text):
        for other, content in good.items():
            (root / other).write_text(content)
        if text is None:
            (root / name).unlink()
        else:
            (root / name).write_text(text)

    broken("bounding_boxes.txt", None)
    with pytest.raises(ValueError, match="no bounding_boxes.txt"):
        data.load(root)
    broken("image_class_labels.txt", good["image_class_labels.txt"].replace("3 3", "3 three"))
    with pytest.raises(ValueError, match=r"image_class_labels.txt line 3: 'three'"):
        data.load(root)
    broken("image_class_labels.txt", good["image_class_labels.txt"].replace("3 3", "3 4"))
    with pytest.raises(ValueError, match="image 3 has class 4"):
        data.load(root)
    broken("train_test_split.txt", good["train_test_split.txt"].replace("5 0\n", ""))
    with pytest.raises(ValueError, match="train_test_split.txt has no line for image 5"):
        data.load(root, "test")
    broken("classes.txt", good["classes.txt"].replace("2 002", "5 002"))
    with pytest.raises(ValueError, match="classes.txt must list class ids"):
        data.info(root)
    broken("images.txt", good["images.txt"])
    missing = root / "images" / CUB_CLASSES[0] / "img_002.jpg"
    missing.unlink()
    with pytest.raises(ValueError, match="img_002.jpg, which does not exist"):
        data.load(root, "test")
    missing.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.warns(UserWarning, match="img_002.jpg"):
        _, labels = collect(data.load(root, "test", image_size=8))
    assert sorted(labels) == [1, 2]
    with pytest.raises(ValueError, match="splits"):
        data.load(root, "val")


# === Augmentation ===


def _crops_and_flips(image, pad=4):
    """Every image the CIFAR augmentation can produce from `image`."""
    padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)], mode="reflect")
    h, w = image.shape[:2]
    crops = [padded[y : y + h, x : x + w] for y in range(2 * pad + 1) for x in range(2 * pad + 1)]
    return np.stack(crops + [c[:, ::-1] for c in crops])


def test_augmentation_is_per_example_within_a_batch(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    write_cifar(tmp_path, per_file=6, image=image)  # 30 copies of one image
    images, _ = next(iter(data.load("cifar10", data_dir=tmp_path, batch_size=30, seed=0)))
    images = np.round(pixels(images.numpy(), "cifar10")).astype(np.int64)
    candidates = _crops_and_flips(image).reshape(162, -1).astype(np.int64)
    matches = [int(np.flatnonzero((candidates == x.reshape(-1)).all(1))[0]) for x in images]
    assert len(set(matches)) >= 10  # 30 draws from 162 outcomes; one crop per batch gives 1
    assert any(m >= 81 for m in matches) and any(m < 81 for m in matches)  # flipped and not

    for split, augment in (("test", None), ("train", False)):
        same, _ = collect(data.load("cifar10", split, data_dir=tmp_path, augment=augment))
        np.testing.assert_allclose(pixels(same, "cifar10") - image, 0, atol=1e-3)


def test_augmentation_reproducible_and_new_each_epoch():
    def epochs(seed, count=2):
        dataset = data.load("digits", limit=64, batch_size=64, shuffle=False, seed=seed)
        return [next(iter(dataset))[0].numpy() for _ in range(count)]

    first, second = epochs(3), epochs(3)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first[0], epochs(4, 1)[0])


def test_no_flip_augmentation_only_translates():
    image = np.arange(8 * 8, dtype=np.uint8).reshape(8, 8, 1) * 3
    augmented, _ = next(
        iter(
            data.from_arrays(
                np.repeat(image[None], 40, 0),
                np.zeros(40),
                batch_size=40,
                augmentation=Augmentation(pad=2, flip=False),
                mean=(0.0,),
                std=(1.0,),
                seed=0,
            )
        )
    )
    candidates = _crops_and_flips(image, pad=2)[:25].reshape(25, -1)
    for x in np.round(augmented.numpy() * 255).reshape(40, -1):
        assert (candidates == x).all(1).any()


# === Precomputed teacher gradients travelling with their images ===


def test_with_teacher_gradients_follows_load_order_and_flips_with_each_gradient():
    """Same seed: the images, order and flips of the flips-only `from_arrays` pipeline, and
    each image carries the gradient table entry of the image as it is shown (flipped or not)."""
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (24, 6, 5, 3), dtype=np.uint8)
    labels = np.arange(24)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    plain = data.from_arrays(raw, labels, batch_size=24, mean=mean, std=std)
    images, _ = collect(plain)  # the un-augmented arrays, as an example gets them
    # Entries tell the two tables and the examples apart: +i for J(x_i), -i - 100 for J(flip x_i).
    index = np.broadcast_to(labels[:, None, None, None], images.shape).astype("float32")
    flipped_table = -index - 100

    for seed in (0, 1):
        reference = data.from_arrays(raw, labels, batch_size=8, augmentation=Augmentation(pad=0),
                                     shuffle=True, seed=seed, mean=mean, std=std)
        cached = data.with_teacher_gradients(images, labels, index, flipped_table,
                                             batch_size=8, seed=seed)
        assert int(cached.cardinality()) == 3
        flips = []
        for _ in range(2):  # two epochs: both reshuffle and redraw the same way
            for (x_ref, y_ref), ((x, g), y) in zip(reference, cached, strict=True):
                np.testing.assert_array_equal(y, y_ref)
                np.testing.assert_array_equal(x, x_ref)
                for xi, gi, yi in zip(x.numpy(), g.numpy(), y.numpy(), strict=True):
                    flipped = not np.array_equal(xi, images[yi])
                    if flipped:
                        np.testing.assert_array_equal(xi, images[yi, :, ::-1])
                    np.testing.assert_array_equal(gi, flipped_table[yi] if flipped else index[yi])
                    flips.append(flipped)
        assert 0.25 < np.mean(flips) < 0.75

    (x, g), y = next(iter(data.with_teacher_gradients(images, labels, index, batch_size=24,
                                                      shuffle=False)))
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(g, index)
    np.testing.assert_array_equal(y, labels)


def test_with_teacher_gradients_refuses_mismatched_tables():
    images = np.zeros((4, 6, 6, 3), "float32")
    with pytest.raises(ValueError, match=r"`gradients` of shape \(4, 6, 6, 1\)"):
        data.with_teacher_gradients(images, np.arange(4), np.zeros((4, 6, 6, 1)))
    with pytest.raises(ValueError, match="`flipped_gradients` of shape"):
        data.with_teacher_gradients(images, np.arange(4), images, images[:3])
    with pytest.raises(ValueError, match="floating-point images"):
        data.with_teacher_gradients(images.astype("uint8"), np.arange(4), images)
    with pytest.raises(ValueError, match="N labels"):
        data.with_teacher_gradients(images, np.arange(3), images)


# === The numpy pipeline (ArrayDataset) beside tf.data ===


def _both(*args, **kwargs):
    """`load(*args, **kwargs)` through each pipeline: (tf.data, ArrayDataset)."""
    return tuple(data.load(*args, **kwargs, pipeline=p) for p in ("tf", "numpy"))


def _examples(images, labels):
    """The examples of one epoch as a sorted list, to compare epochs as multisets."""
    return sorted(zip(labels.tolist(), (x.tobytes() for x in images), strict=True))


def test_digits_are_upsampled_as_tf_image_resize():
    """The numpy upsampling of scikit-learn's digits gives tf.image.resize's pixels, so both
    pipelines (and the data of earlier releases) hold the same images."""
    small = load_digits().images[..., None].astype(np.float32) * (255 / 16)
    reference = tf.image.resize(small, (32, 32), method="bilinear").numpy()
    reference = np.clip(np.round(reference), 0, 255).astype(np.uint8)
    arrays = sources.digits_arrays()
    np.testing.assert_array_equal(np.concatenate([arrays["train"][0], arrays["test"][0]]),
                                  reference)


@pytest.mark.parametrize("size", [(20, 20), (45, 37), (8, 12)])
def test_numpy_resize_is_tf_image_resize(size):
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 30, 2), dtype=np.uint8)
    reference = tf.image.resize(images, size, method="bilinear", antialias=True).numpy()
    np.testing.assert_allclose(augment_numpy.resize(images, size), reference, atol=2e-3)


@pytest.mark.parametrize("mode", ["REFLECT", "SYMMETRIC", "CONSTANT"])
def test_numpy_crops_pad_as_tf_pad(mode):
    images = np.random.default_rng(1).integers(0, 256, (6, 7, 9, 2), dtype=np.uint8)
    augmentation = Augmentation(pad=3, pad_mode=mode)
    offsets = np.array([[0, 0], [6, 6], [1, 5], [3, 2], [6, 0], [2, 4]])
    flips = np.array([False, True, False, True, True, False])
    out = augment_numpy.crop_and_flip(images, offsets, flips, augmentation)
    padded = tf.pad(images, [[0, 0], [3, 3], [3, 3], [0, 0]], mode=mode).numpy()
    for k, ((top, left), flip) in enumerate(zip(offsets, flips, strict=True)):
        window = padded[k, top : top + 7, left : left + 9]
        np.testing.assert_array_equal(out[k], window[:, ::-1] if flip else window)


@pytest.mark.parametrize("split, image_size", [("test", None), ("train[:300]", 20)])
def test_numpy_pipeline_gives_the_tf_data_batches_without_augmentation(split, image_size):
    reference, numpy_data = _both("digits", split, batch_size=64, augment=False, shuffle=False,
                                  image_size=image_size)
    assert isinstance(numpy_data, data.ArrayDataset)
    assert isinstance(numpy_data, keras.utils.PyDataset)
    assert len(numpy_data) == int(reference.cardinality())
    for (x_ref, y_ref), (x, y) in zip(reference, numpy_data, strict=True):
        assert x.dtype == np.float32 and y.dtype == np.int32 and x.shape == tuple(x_ref.shape)
        np.testing.assert_array_equal(y, y_ref)
        if image_size is None:
            np.testing.assert_array_equal(x, x_ref)  # the same float32 arithmetic
        else:
            np.testing.assert_allclose(x, x_ref, atol=1e-5)

    # from_arrays, its statistics computed from the images
    raw = np.random.default_rng(0).integers(0, 256, (10, 6, 6, 3), dtype=np.uint8)
    tf_batches, numpy_batches = (collect(data.from_arrays(raw, np.arange(10), 4, pipeline=p))
                                 for p in ("tf", "numpy"))
    np.testing.assert_array_equal(numpy_batches[0], tf_batches[0])
    np.testing.assert_array_equal(numpy_batches[1], tf_batches[1])


def test_numpy_pipeline_epochs_hold_the_examples_of_tf_data_epochs():
    """Shuffled, each epoch of either pipeline holds the same examples (as a multiset), so the
    same normalised statistics; the orders differ from epoch to epoch and from the source."""
    reference, numpy_data = _both("digits", limit=200, batch_size=64, augment=False, seed=0)
    source = collect(data.load("digits", limit=200, augment=False, shuffle=False))
    orders = []
    for _ in range(2):
        images, labels = collect(numpy_data)
        assert _examples(images, labels) == _examples(*collect(reference))
        assert _examples(images, labels) == _examples(*source)
        orders.append(labels)
        assert abs(images.mean() - source[0].mean()) < 1e-5
        assert abs(images.std() - source[0].std()) < 1e-5
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[0], source[1])


def _draws(dataset, image, pad):
    """(row offset, column offset, flipped) of every example of one epoch of copies of
    `image`, identified among the augmentation's possible outputs."""
    images, _ = collect(dataset)
    images = np.round(images * 255).astype(np.int64).reshape(len(images), -1)
    candidates = _crops_and_flips(image, pad).reshape(-1, images.shape[1]).astype(np.int64)
    side = 2 * pad + 1
    found = []
    for x in images:
        (match,) = np.flatnonzero((candidates == x).all(1))[:1]
        found.append((match % side**2 // side, match % side, match >= side**2))
    return np.array(found)


def test_numpy_pipeline_draws_crops_and_flips_as_tf_data():
    """Each example gets its own crop offset, uniform over [0, 2 * pad] on each axis, and a
    flip with probability 1/2, in both pipelines (whose draws differ, their statistics not)."""
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    copies = np.repeat(image[None], 1000, 0)
    kwargs = dict(batch_size=250, augmentation=Augmentation(pad=2), shuffle=True, seed=0,
                  mean=(0.0,) * 3, std=(1.0,) * 3)
    draws = {p: _draws(data.from_arrays(copies, np.zeros(1000), **kwargs, pipeline=p), image, 2)
             for p in ("tf", "numpy")}
    histograms = {}
    for pipeline, found in draws.items():
        assert 0.45 < found[:, 2].mean() < 0.55, pipeline
        histograms[pipeline] = [np.bincount(found[:, axis], minlength=5) / 1000
                                for axis in (0, 1)]
        for histogram in histograms[pipeline]:
            assert len(histogram) == 5 and np.all(np.abs(histogram - 0.2) < 0.05), histogram
        assert np.all(np.abs(found[:, :2].mean(0) - 2) < 0.15), pipeline
    assert np.abs(np.subtract(histograms["tf"], histograms["numpy"])).max() < 0.06

    no_flip = data.from_arrays(copies[:200], np.zeros(200), **{
        **kwargs, "augmentation": Augmentation(pad=2, flip=False)}, pipeline="numpy")
    found = _draws(no_flip, image, 2)
    assert not found[:, 2].any() and len(set(map(tuple, found[:, :2]))) == 25


def test_numpy_pipeline_is_deterministic_for_a_seed_whatever_the_order_of_requests():
    def load(seed):
        return data.load("digits", limit=100, batch_size=32, seed=seed, pipeline="numpy")

    first, second = load(3), load(3)
    epoch = [first[i] for i in range(len(first))]
    backwards = [second[i] for i in reversed(range(len(second)))][::-1]  # as workers might ask
    for (x, y), (x_again, y_again) in zip(epoch, backwards, strict=True):
        np.testing.assert_array_equal(x, x_again)
        np.testing.assert_array_equal(y, y_again)
    # Iterating is an epoch (the one asked for above), then moves to the next.
    np.testing.assert_array_equal(collect(first)[0], np.concatenate([x for x, _ in epoch]))
    collect(second)
    first.on_epoch_end()  # as fit moves on: both at epoch 2
    second.on_epoch_end()
    epoch_2 = collect(first)[0]
    np.testing.assert_array_equal(collect(second)[0], epoch_2)
    assert not np.array_equal(collect(first)[0], epoch_2)  # epoch 3: new order, new crops
    assert not np.array_equal(collect(load(4))[0], collect(load(3))[0])
    with pytest.raises(IndexError, match="4 batches; batch 4"):
        first[4]

    keras.utils.set_random_seed(1)  # seed=None draws from numpy's generator
    unseeded = collect(load(None))
    keras.utils.set_random_seed(1)
    np.testing.assert_array_equal(collect(load(None))[0], unseeded[0])


def test_numpy_pipeline_feeds_fit_with_worker_threads():
    """About 3 s: a small CNN on 96 digits, 2 epochs, batches made by 2 threads."""
    train = data.load("digits", limit=96, batch_size=32, image_size=16, seed=0,
                      pipeline="numpy")
    train.workers = 2
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(4, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(train, epochs=2, verbose=0).history
    assert len(history["loss"]) == 2 and np.isfinite(history["loss"]).all()


def test_without_tensorflow_load_gives_the_numpy_pipeline(monkeypatch, tmp_path):
    """Where TensorFlow is not installed (here: hidden), `pipeline="auto"` picks numpy, and
    what needs TensorFlow (tf.data asked for, image folders, TFDS directories) says so."""
    _save(tmp_path / "folder" / "a" / "0.png", (255, 0, 0), (4, 4))
    _save(tmp_path / "folder" / "b" / "0.png", (0, 255, 0), (4, 4))
    with pytest.raises(ValueError, match="pipeline='numpy' serves the named datasets"):
        data.load(tmp_path / "folder", pipeline="numpy")
    with pytest.raises(ValueError, match="pad-crop-flip Augmentation only"):
        data.from_arrays(np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4), pipeline="numpy",
                         augmentation=Augmentation(pad=0, crop_area=(0.5, 1.0)))
    with pytest.raises(ValueError, match=r"pipeline must be one of \('auto', 'tf', 'numpy'\)"):
        data.load("digits", pipeline="jax")

    monkeypatch.setitem(sys.modules, "tensorflow", None)
    assert isinstance(data.load("digits", "test", limit=10), data.ArrayDataset)
    assert data.info(tmp_path / "folder").class_names == ("a", "b")  # info needs no TensorFlow
    with pytest.raises(ImportError, match="pipeline='tf' builds tf.data pipelines"):
        data.load("digits", pipeline="tf")
    with pytest.raises(ImportError, match="reads image folders and CUB .* through tf.data"):
        data.load(tmp_path / "folder")

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    (tmp_path / "tfds" / "mnist" / "3.0.1").mkdir(parents=True)
    (tmp_path / "tfds" / "mnist" / "3.0.1" / "dataset_info.json").write_text(json.dumps({}))
    with pytest.raises(ImportError, match="TFDS directory, .*, which only tensorflow-datasets"):
        data.load("mnist")


# === Errors and metadata ===


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="cifar10.*cifar100.*fashion_mnist.*mnist.*digits"):
        data.load("imagenet21k")


def test_missing_dataset_lists_places_and_fails_fast(tmp_path, monkeypatch):
    # Fast: offline, nothing is downloaded; a name lookup or connection fails the test at once.
    def connect(*args):
        pytest.fail(f"a network call was made: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", connect)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    with pytest.raises(FileNotFoundError) as error:
        data.load("cifar100", data_dir=tmp_path / "nowhere")
    message = str(error.value)
    for place in (
        tmp_path / "nowhere",
        tmp_path / "keras_home" / "datasets" / "cifar-100-python-target",
        tmp_path / "tfds",
    ):
        assert str(place) in message
    assert "KERAS_AT_OFFLINE" in message and "cifar-100-python.tar.gz" in message
    assert "download disabled by KERAS_AT_OFFLINE=1" in message


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        data.load("digits", batch_size=0)
    with pytest.raises(ValueError, match="limit"):
        data.load("digits", limit=0)
    with pytest.raises(ValueError, match="augment"):
        data.load("digits", augment="yes")
    with pytest.raises(ValueError, match="image_size"):
        data.load("digits", image_size=(32,))


def test_info_constants():
    cifar = data.info("cifar10")
    np.testing.assert_allclose(np.multiply(cifar.mean, 255), [125.3, 123.0, 113.9])
    np.testing.assert_allclose(np.multiply(cifar.std, 255), [63.0, 62.1, 66.7])
    assert cifar.class_names[0] == "airplane" and cifar.augmentation == Augmentation()
    fashion = data.info("fashion_mnist")
    assert fashion.image_shape == (28, 28, 1) and fashion.class_names[-1] == "Ankle boot"
