"""Rendering of attention maps as numpy arrays and as a PNG figure."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import tiny_net
from PIL import Image

import keras_at
from keras_at import visualize


def images(n=3, channels=3):
    return np.random.default_rng(0).normal(size=(n, 16, 16, channels)).astype("float32")


def test_normalize_is_per_map_and_constant_maps_give_zeros():
    maps = np.stack([np.arange(16.0).reshape(4, 4) * 5 + 3, np.full((4, 4), 7.0)])
    maps[0, 0, 1] = np.nan
    out = visualize.normalize(maps)
    assert np.isfinite(out).all()
    assert out[0].min() == 0.0 and out[0].max() == 1.0
    assert (out[1] == 0).all()


def test_colorize_gives_rgb_in_unit_range_without_nans():
    rgb = visualize.colorize(np.stack([np.eye(8), np.zeros((8, 8))]))
    assert rgb.shape == (2, 8, 8, 3) and rgb.dtype == np.float32
    assert np.isfinite(rgb).all() and rgb.min() >= 0 and rgb.max() <= 1
    assert not np.allclose(rgb[0, 0, 0], rgb[0, 0, 1])  # high and low values differ in colour
    assert np.allclose(rgb[1], rgb[1, 0, 0])  # a constant map is one colour


def test_upsample_keeps_values_and_reaches_the_size():
    maps = np.random.default_rng(1).random((2, 4, 4)).astype("float32")
    up = visualize.upsample(maps, (16, 16))
    assert up.shape == (2, 16, 16)
    assert up.min() >= maps.min() - 1e-6 and up.max() <= maps.max() + 1e-6
    assert visualize.upsample(np.ones((4, 4)), (8, 12)).shape == (8, 12)
    with pytest.raises(ValueError, match="shape"):
        visualize.upsample(np.ones(4), (8, 8))


def test_overlay_blends_a_grayscale_image_with_the_colour_map():
    image = images(1, channels=1)[0]
    attention = np.random.default_rng(2).random((4, 4))
    rgb = visualize.to_rgb(image)
    assert rgb.shape == (16, 16, 3) and rgb.min() == 0 and rgb.max() == 1
    assert np.allclose(visualize.overlay(image, attention, alpha=0.0), rgb)
    heat = visualize.colorize(visualize.upsample(attention, (16, 16)))
    assert np.allclose(visualize.overlay(image, attention, alpha=1.0), heat)
    mixed = visualize.overlay(image, attention)
    assert mixed.shape == (16, 16, 3) and np.allclose(mixed, (rgb + heat) / 2)
    assert visualize.overlay(images(2), np.zeros((2, 4, 4))).shape == (2, 16, 16, 3)
    with pytest.raises(ValueError, match="alpha"):
        visualize.overlay(image, attention, alpha=1.5)
    with pytest.raises(ValueError, match="one"):
        visualize.overlay(images(2), attention)


def test_plot_attention_writes_a_png_of_the_expected_size(tmp_path):
    distiller = keras_at.Distiller(tiny_net(2, "s"), tiny_net(4, "t"))
    path = tmp_path / "figs" / "attention.png"
    figure = visualize.plot_attention(distiller, images(5), path, max_images=3)
    # Columns: image, then teacher and student for each of the two pairs; 150 px per cell.
    assert len(figure.axes) == 3 * 5
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (5 * 150, 3 * 150)
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.std() > 10  # not a blank page

    with pytest.raises(FileExistsError, match="attention.png"):
        visualize.plot_attention(distiller, images(5), path)
    visualize.plot_attention(distiller, images(1), path, overwrite=True)
    with Image.open(path) as png:
        assert png.size == (5 * 150, 150)


def test_plot_attention_on_grayscale_without_saving():
    distiller = keras_at.Distiller(tiny_net(2, "s", channels=1), tiny_net(4, "t", channels=1),
                                   pairs=[("group1", "group1")])
    figure = visualize.plot_attention(distiller, images(2, channels=1))
    assert len(figure.axes) == 2 * 3
    with pytest.raises(ValueError, match="images"):
        visualize.plot_attention(distiller, images(2, channels=1)[0])


def test_pair_grid_rows_are_examples_and_columns_image_teacher_student_overlay():
    x = images(3)
    student = np.random.default_rng(1).random((3, 4, 4))
    teacher = np.random.default_rng(2).random((3, 8, 8))
    grid = visualize.pair_grid(x, student, teacher, gap=2)
    # 16-pixel tiles enlarged 6x to 96, 2 white pixels between tiles, the titles on top.
    head = visualize.title_height(96) + 2
    assert grid.shape == (head + 3 * 96 + 2 * 2, 4 * 96 + 3 * 2, 3)
    assert grid.min() >= 0 and grid.max() <= 1
    pictures = visualize.pair_maps(x, student, teacher)
    assert tuple(pictures) == visualize.GRID_COLUMNS
    for row in range(3):
        for column, kind in enumerate(visualize.GRID_COLUMNS):
            top, left = head + row * 98, column * 98
            np.testing.assert_array_equal(grid[top:top + 96:6, left:left + 96:6],
                                          pictures[kind][row])
    np.testing.assert_array_equal(grid[head + 96:head + 98], 1.0)  # white between rows
    np.testing.assert_array_equal(grid[head - 2:head], 1.0)  # and under the titles
    untitled = visualize.pair_grid(x, student, teacher, gap=2, titles=False)
    np.testing.assert_array_equal(untitled, grid[head:])
    # Tiles of 96 pixels or more are not enlarged.
    big = visualize.pair_grid(np.zeros((1, 100, 100, 1)), student[:1], teacher[:1], gap=0)
    assert big.shape == (visualize.title_height(100) + 100, 400, 3)


def test_pair_grid_titles_each_column_in_the_picture():
    """Each column's title is drawn over its own tile: dark ink centred in that column, on
    white, and four different words make four different strips."""
    x = images(2)
    grid = visualize.pair_grid(x, np.ones((2, 4, 4)), np.ones((2, 4, 4)), gap=2)
    strip = grid[:visualize.title_height(96)].mean(axis=-1)
    columns = [strip[:, c * 98:c * 98 + 96] for c in range(4)]
    for title, column in zip(visualize.GRID_COLUMNS, columns):
        ink = np.argwhere(column < 0.5)
        assert len(ink) > 20, f"no letters over the {title} column"
        left, right = ink[:, 1].min(), ink[:, 1].max()
        assert abs((left + right) / 2 - 48) < 8, f"{title} not centred: {left}..{right}"
        assert right - left < 96
    # Longer words are wider: letters are drawn, not a bar.
    widths = [np.ptp(np.argwhere(c < 0.5)[:, 1]) for c in columns]
    assert widths[0] < widths[2]  # "image" < "student"
    for a in range(4):
        for b in range(a + 1, 4):
            assert not np.array_equal(columns[a] < 0.5, columns[b] < 0.5)
    np.testing.assert_array_equal(strip[:, 96:98], 1.0)  # the gaps between titles stay white


def test_plot_attention_functions_draws_figure_4s_grid_of_layers_and_functions(tmp_path):
    """Rows: examples; columns: the image, then per group F_sum, F_sum^2, F_sum^4, F_max^1."""
    import keras

    model = tiny_net(4, "net")
    path = tmp_path / "fig4.png"
    figure = visualize.plot_attention_functions(model, images(5), path, max_images=3)
    columns = 1 + 2 * 4  # group0 and group1 found by name, four functions each
    assert len(figure.axes) == 3 * columns
    titles = [axis.get_title() for axis in figure.axes[:columns]]
    assert titles[0] == "image"
    assert titles[1:5] == [f"group0\n$F_{{\\mathrm{{{r}}}}}^{{{p}}}$"
                           for r, p in (("sum", 1), ("sum", 2), ("sum", 4), ("max", 1))]
    assert titles[5].startswith("group1\n")
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (columns * 150, 3 * 150)
        assert np.asarray(png.convert("RGB")).std() > 10  # not a blank page
    # The panel of example 2, group1, F_max^1: max over channels of |A|, upsampled, coloured.
    features = keras.Model(model.input, model.get_layer("group1").output)(images(5)[:3])
    expected = np.abs(keras.ops.convert_to_numpy(features)).max(axis=-1)[2]
    panel = figure.axes[2 * columns + 8].get_images()[0].get_array()
    np.testing.assert_allclose(panel, visualize.colorize(visualize.upsample(expected, (16, 16))),
                               atol=1e-5)
    sum1, sum4 = (figure.axes[2 * columns + c].get_images()[0].get_array() for c in (5, 7))
    assert not np.allclose(sum1, sum4)  # p changes the map
    with pytest.raises(FileExistsError, match="fig4.png"):
        visualize.plot_attention_functions(model, images(2), path)


def test_plot_attention_functions_takes_layers_and_functions_and_checks_them():
    import keras

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="conv_b")(x)
    head = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    plain = keras.Model(inputs, head)  # no groupN names: the last layer at each resolution
    assert len(visualize.plot_attention_functions(plain, images(2)).axes) == 2 * (1 + 2 * 4)
    figure = visualize.plot_attention_functions(plain, images(2), layers=["conv_b"],
                                                functions=[("sum", 3)])
    assert [axis.get_title() for axis in figure.axes[:2]] == [
        "image", "conv_b\n$F_{\\mathrm{sum}}^{3}$"]
    with pytest.raises(ValueError, match="reduction"):
        visualize.plot_attention_functions(plain, images(2), functions=[("median", 2)])
    with pytest.raises(ValueError, match="p=-1"):
        visualize.plot_attention_functions(plain, images(2), functions=[("sum", -1)])
    with pytest.raises(ValueError, match=r"\(reduction, p\) pair"):
        visualize.plot_attention_functions(plain, images(2), functions=["sum"])
    with pytest.raises(ValueError, match="non-empty list of layer names"):
        visualize.plot_attention_functions(plain, images(2), layers="conv_b")
    with pytest.raises(ValueError, match="no layer named 'conv_c'.*conv_a"):
        visualize.plot_attention_functions(plain, images(2), layers=["conv_c"])


def test_plot_attention_functions_on_the_authors_resnet_shows_its_four_groups():
    from test_authors_resnet import random_params

    from keras_at import models

    model = models.load_authors_resnet(random_params(18), input_shape=(64, 64, 3))
    figure = visualize.plot_attention_functions(
        model, np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32"))
    titles = [axis.get_title().split("\n")[0] for axis in figure.axes[:17]]
    assert titles == ["image"] + [f"group{g}" for g in range(4) for _ in range(4)]
    assert len(figure.axes) == 2 * 17


@pytest.mark.slow  # a Python process
def test_import_keras_at_does_not_import_matplotlib():
    """keras_at imports with matplotlib unimportable; only drawing needs it.

    (Keras 3.15 itself imports matplotlib.pyplot when it is installed, so `sys.modules` after
    `import keras_at` cannot tell; hiding matplotlib can.)
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = """if True:
        import importlib.abc, sys

        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "matplotlib":
                    raise ModuleNotFoundError(f"No module named {name!r}")

        sys.meta_path.insert(0, Hide())
        import keras_at, keras_at.callbacks, keras_at.visualize
        try:
            keras_at.visualize.colorize([[0.0, 1.0]])
        except ImportError as err:
            print("drawing needs:", err)
        print(sorted(m for m in sys.modules if m.startswith("matplotlib")))
    """
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": root}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-2:] == ["drawing needs: No module named 'matplotlib'", "[]"]
