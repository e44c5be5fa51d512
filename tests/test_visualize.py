"""Rendering of attention maps as numpy arrays and as a PNG figure."""

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
