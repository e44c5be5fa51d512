"""Attention maps as pictures: colour-mapped, upsampled, overlaid on the input, in a grid.

The numpy functions here are the one rendering used by both
`keras_at.callbacks.AttentionMapLogger` (TensorBoard) and `plot_attention`
(a matplotlib figure, for the examples and for users without TensorBoard).
`plot_attention_functions` draws the paper's Figs. 2 and 4: one network's
maps at several layers for several attention mapping functions.
Every map and image is min-max normalised per example for display only: the
loss compares l2-normalised maps, whose absolute scale says nothing to the eye.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
from keras import ops

from keras_at._argument_checks import check_int, refuse_overwrite
from keras_at.attention import attention_map, check_attention_args, resize_maps
from keras_at.pairs import auto_pairs
from keras_at.taps import build_tap, graph_model

if TYPE_CHECKING:  # matplotlib is imported where a colour map or figure is drawn
    from matplotlib.figure import Figure

DEFAULT_CMAP = "inferno"
# Fig. 4 of the paper: F_sum (p = 1), F_sum^2, F_sum^4 and F_max^1, as (reduction, p).
PAPER_FUNCTIONS = (("sum", 1), ("sum", 2), ("sum", 4), ("max", 1))
# Inches per grid cell; at `dpi=100` a cell is 150x150 pixels.
_CELL = 1.5


def normalize(maps) -> np.ndarray:
    """Min-max normalises each `(H, W)` map of `(..., H, W)` to [0, 1]; a constant map gives 0.

    Args:
        maps: array of shape `(H, W)` or `(..., H, W)`.

    Returns:
        A float32 array of the same shape, in [0, 1], without NaNs.

    Examples:
        >>> normalize(np.array([[1.0, 3.0], [2.0, 2.0]]))
        array([[0. , 1. ],
               [0.5, 0.5]], dtype=float32)
    """
    maps = np.asarray(maps, dtype="float32")
    if maps.ndim < 2:
        raise ValueError(f"Expected maps of shape (..., H, W), got shape {maps.shape}.")
    maps = np.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
    low = maps.min(axis=(-2, -1), keepdims=True)
    span = maps.max(axis=(-2, -1), keepdims=True) - low
    # Dividing by a zero span would give NaN; constant maps are shown as all zeros.
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0).astype("float32")


def upsample(maps, size) -> np.ndarray:
    """Bilinear resize of a `(H, W)` map or `(B, H, W)` maps to `size=(H', W')`.

    The same resize the loss uses when a teacher map is larger than the student's.

    Args:
        maps: array of shape `(H, W)` or `(B, H, W)`.
        size: target `(height, width)`.

    Returns:
        A float32 numpy array of shape `size` or `(B, *size)`.

    Examples:
        >>> upsample(np.eye(4), (16, 16)).shape
        (16, 16)
    """
    maps = np.asarray(maps, dtype="float32")
    if maps.ndim not in (2, 3):
        raise ValueError(f"Expected a (H, W) map or (B, H, W) maps, got shape {maps.shape}.")
    size = tuple(int(s) for s in size)
    batched = maps if maps.ndim == 3 else maps[None]
    resized = ops.convert_to_numpy(resize_maps(ops.convert_to_tensor(batched), size))
    return resized if maps.ndim == 3 else resized[0]


def colorize(maps, cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """Colour-maps normalised `(..., H, W)` maps to RGB `(..., H, W, 3)` floats in [0, 1].

    Args:
        maps: array of shape `(H, W)` or `(..., H, W)`; normalised per map first.
        cmap: name of a matplotlib colormap.

    Returns:
        A float32 array of shape `(..., H, W, 3)` in [0, 1].

    Examples:
        >>> colorize(np.eye(8)).shape
        (8, 8, 3)
    """
    import matplotlib  # here, not at import: `import keras_at` does not load matplotlib

    colormap = matplotlib.colormaps[cmap]
    return colormap(normalize(maps))[..., :3].astype("float32")


def to_rgb(images) -> np.ndarray:
    """Images `(H, W, C)` or `(B, H, W, C)` with C in {1, 3}, de-normalised per image to [0, 1].

    Training images are usually standardised (mean 0, std 1); for display
    each image is min-max rescaled, and grayscale is repeated to 3 channels.

    Args:
        images: array of shape `(H, W, C)` or `(B, H, W, C)`.

    Returns:
        A float32 array of shape `(H, W, 3)` or `(B, H, W, 3)` in [0, 1].

    Examples:
        >>> to_rgb(np.zeros((28, 28, 1))).shape
        (28, 28, 3)
    """
    images = np.asarray(images, dtype="float32")
    if images.ndim not in (3, 4) or images.shape[-1] not in (1, 3):
        raise ValueError(
            "Expected channels-last images (H, W, C) or (B, H, W, C) with C = 1 or 3, "
            f"got shape {images.shape}."
        )
    # Normalise over (H, W, C) jointly: channels keep their relative colour.
    moved = np.moveaxis(images, -1, -3)
    flat = moved.reshape(*moved.shape[:-2], -1)
    rgb = np.moveaxis(normalize(flat).reshape(moved.shape), -3, -1)
    return np.repeat(rgb, 3, axis=-1) if rgb.shape[-1] == 1 else rgb


def overlay(images, maps, alpha: float = 0.5, cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """The input images with their attention maps blended on top in a colour map.

    Maps are upsampled to the image size, colour-mapped, and mixed as
    `(1 - alpha) * image + alpha * colour`.

    Args:
        images: `(H, W, C)` or `(B, H, W, C)`, C in {1, 3}, any value range.
        maps: `(h, w)` or `(B, h, w)`, any size; upsampled to `(H, W)`.
        alpha: opacity of the map, in [0, 1].
        cmap: name of a matplotlib colormap.

    Returns:
        A float32 array of shape `(H, W, 3)` or `(B, H, W, 3)` in [0, 1].

    Examples:
        >>> overlay(np.random.rand(32, 32, 3), np.random.rand(8, 8)).shape
        (32, 32, 3)
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1], got {alpha!r}.")
    rgb = to_rgb(images)
    maps = np.asarray(maps, dtype="float32")
    if maps.ndim != rgb.ndim - 1:
        raise ValueError(
            f"Got images of shape {np.shape(images)} but maps of shape {maps.shape}; "
            "expected one (h, w) map per image."
        )
    heat = colorize(upsample(maps, rgb.shape[-3:-1]), cmap)
    return ((1.0 - alpha) * rgb + alpha * heat).astype("float32")


# The columns of `pair_grid`, left to right.
GRID_COLUMNS = ("image", "teacher", "student", "overlay")
# `pair_grid` enlarges small tiles (28x28 Fashion-MNIST) to at least this many pixels a side.
_MIN_TILE = 96


def pair_maps(images, student_maps, teacher_maps, cmap: str = DEFAULT_CMAP) -> dict:
    """The pictures of one pair: `{kind: (B, H, W, 3) floats in [0, 1]}`, kinds `GRID_COLUMNS`.

    `image` is the input, `teacher` and `student` the colour-mapped maps upsampled to the input
    size, `overlay` the student's map over the input.
    """
    rgb = to_rgb(images)
    size = rgb.shape[-3:-1]
    return {
        "image": rgb,
        "teacher": colorize(upsample(teacher_maps, size), cmap),
        "student": colorize(upsample(student_maps, size), cmap),
        "overlay": overlay(images, student_maps, cmap=cmap),
    }


def pair_grid(images, student_maps, teacher_maps, cmap: str = DEFAULT_CMAP,
              gap: int = 2, titles: bool = True) -> np.ndarray:
    """One picture comparing a pair's maps: rows are examples, columns `GRID_COLUMNS`.

    Tiles smaller than 96 pixels a side are enlarged by an integer factor (nearest neighbour),
    and separated by `gap` white pixels. With `titles`, a white strip on top names each column
    (image, teacher, student, overlay), so the picture explains itself in TensorBoard.

    Args:
        images: `(B, H, W, C)` inputs, C in {1, 3}.
        student_maps: `(B, h, w)` the student's maps of one pair.
        teacher_maps: `(B, h', w')` the teacher's maps of that pair.
        cmap: name of a matplotlib colormap.
        gap: pixels between tiles.
        titles: whether to put the column titles on top.

    Returns:
        A float32 array `(S + B * T + (B - 1) * gap, 4 * T' + 3 * gap, 3)` in [0, 1], with
        `T, T'` the enlarged tile height and width and `S` the title strip's height and its gap
        (`title_height(T') + gap`; 0 without titles).

    Examples:
        >>> pair_grid(np.zeros((2, 32, 32, 3)), np.ones((2, 8, 8)), np.ones((2, 8, 8))).shape
        (220, 390, 3)
    """
    pictures = pair_maps(images, student_maps, teacher_maps, cmap)
    tiles = np.stack([pictures[kind] for kind in GRID_COLUMNS], axis=1)  # (B, 4, H, W, 3)
    scale = max(1, -(-_MIN_TILE // max(tiles.shape[2:4])))
    tiles = tiles.repeat(scale, axis=2).repeat(scale, axis=3)
    tile_width = tiles.shape[3]
    tiles = np.pad(tiles, ((0, 0), (0, 0), (0, gap), (0, gap), (0, 0)), constant_values=1.0)
    rows, columns, height, width, _ = tiles.shape
    grid = tiles.transpose(0, 2, 1, 3, 4).reshape(rows * height, columns * width, 3)
    grid = grid[: grid.shape[0] - gap, : grid.shape[1] - gap]
    if titles:
        strip = _title_strip(GRID_COLUMNS, tile_width, gap)
        grid = np.concatenate([strip, np.ones((gap,) + grid.shape[1:]), grid])
    return grid.astype("float32")


def title_height(tile_width: int) -> int:
    """Pixels of `pair_grid`'s title strip over tiles `tile_width` pixels wide."""
    return max(18, tile_width // 4)


def _title_strip(titles, tile_width: int, gap: int) -> np.ndarray:
    """`(title_height, len(titles) * (tile_width + gap) - gap, 3)`: black titles on white, each
    centred over its column, drawn by matplotlib (Agg, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height = title_height(tile_width)
    width = len(titles) * (tile_width + gap) - gap
    dpi = 100
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    canvas = FigureCanvasAgg(figure)
    for column, title in enumerate(titles):
        centre = (column * (tile_width + gap) + tile_width / 2) / width
        # 0.55 of the strip's height, in points (72 a inch), for the letters' cap height.
        figure.text(centre, 0.5, title, ha="center", va="center", color="black",
                    fontsize=0.55 * height * 72 / dpi)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].astype("float32") / 255.0
    # The canvas rounds inches to pixels: trim or pad with white to the exact size.
    rgb = rgb[:height, :width]
    return np.pad(rgb, ((0, height - rgb.shape[0]), (0, width - rgb.shape[1]), (0, 0)),
                  constant_values=1.0)


def plot_attention(
    distiller,
    images,
    path: str | os.PathLike | None = None,
    max_images: int = 4,
    overwrite: bool = False,
    cmap: str = DEFAULT_CMAP,
    dpi: int = 100,
) -> Figure:
    """Draws a grid of images and the teacher's and student's attention maps for each pair.

    Rows are examples; columns are the input image, then for every pair of
    `distiller.pairs` the teacher's map and the student's map, upsampled to
    the input size. The figure uses matplotlib's Agg renderer through
    `matplotlib.figure.Figure`, so no display (and no pyplot state) is needed.

    Args:
        distiller: a `keras_at.Distiller`.
        images: a batch `(B, H, W, C)` of inputs, as the distiller reads them.
        path: where to save the figure as PNG; None to only return it.
        max_images: number of examples (rows) drawn from the start of `images`.
        overwrite: replace an existing file at `path`; otherwise that is an error.
        cmap: name of a matplotlib colormap for the maps.
        dpi: resolution of the saved PNG; each cell is 1.5 inches square.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    ```python
    keras_at.visualize.plot_attention(distiller, x_test[:4], "attention.png")
    ```
    """
    check_int(max_images, "max_images")
    if path is not None:
        refuse_overwrite(path, overwrite)

    images = _image_batch(images)[:max_images]
    maps = distiller.attention_maps(images)
    if not maps:
        raise ValueError("The distiller has no activation pairs, so there are no maps to plot.")
    columns = [("image", to_rgb(images))]
    for name, (student_map, teacher_map) in maps.items():
        pictures = pair_maps(images, student_map, teacher_map, cmap)
        columns.append((f"{name}\nteacher", pictures["teacher"]))
        columns.append((f"{name}\nstudent", pictures["student"]))

    return _draw(columns, path, overwrite, dpi)


def plot_attention_functions(
    model,
    images,
    path: str | os.PathLike | None = None,
    layers=None,
    functions=PAPER_FUNCTIONS,
    max_images: int = 4,
    overwrite: bool = False,
    cmap: str = DEFAULT_CMAP,
    dpi: int = 100,
) -> Figure:
    """Draws one network's attention maps for several mapping functions (the paper's Figs. 2, 4).

    Rows are examples; columns are the input image, then for every layer of `layers` one map
    per function of `functions`, upsampled (bilinear) to the input size. The paper's Fig. 4
    shows, for a network's mid-level and top layers, F_sum, F_sum^2, F_sum^4 and F_max^1 (the
    default): as p grows the maps concentrate on the most active regions. Each map is
    min-max normalised for display. The network runs once, in inference mode.

    Args:
        model: a Keras model of logits (functional, `Sequential`, or subclassed returning a
            dict of named features, as a `Distiller` reads it).
        images: a batch `(B, H, W, C)` of inputs, as the model reads them.
        path: where to save the figure as PNG; None to only return it.
        layers: names of 4-D layers; None: the model's groups (`group0`, `group1`, ...) when
            it names them (keras_at's models, `load_authors_resnet`), else the last block
            output at each resolution (the rule of `pairs="auto"`).
        functions: `(reduction, p)` pairs of `keras_at.attention_map`, one column each per
            layer: `("sum", 2)` is F_sum^2, `("max", 1)` F_max^1.
        max_images: number of examples (rows) drawn from the start of `images`.
        overwrite: replace an existing file at `path`; otherwise that is an error.
        cmap: name of a matplotlib colormap for the maps.
        dpi: resolution of the saved PNG; each cell is 1.5 inches square.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    ```python
    model = keras_at.models.load_authors_resnet("resnet-34-export.pth")
    keras_at.visualize.plot_attention_functions(model, images[:4], "fig4.png",
                                                layers=["group2", "group3"])
    ```
    """
    check_int(max_images, "max_images")
    functions = _check_functions(functions)
    if path is not None:
        refuse_overwrite(path, overwrite)

    images = _image_batch(images)[:max_images]
    graph = graph_model(model, "model", input_shape=images.shape[1:])
    if layers is None:
        layers = [name for name, _ in auto_pairs(graph, graph)]
    elif isinstance(layers, str) or not layers:
        raise ValueError(f"`layers` must be a non-empty list of layer names, got {layers!r}.")
    outputs = build_tap(graph, list(layers), "model")(images, training=False)
    rgb = to_rgb(images)
    columns = [("image", rgb)]
    for name, features in zip(layers, outputs[1:]):
        for reduction, p in functions:
            maps = ops.convert_to_numpy(attention_map(features, p=p, reduction=reduction))
            title = f"{name}\n$F_{{\\mathrm{{{reduction}}}}}^{{{p:g}}}$"
            columns.append((title, colorize(upsample(maps, rgb.shape[1:3]), cmap)))
    return _draw(columns, path, overwrite, dpi)


def _check_functions(functions) -> list[tuple[str, float]]:
    """`functions` as a list of `(reduction, p)`, each checked as `attention_map` checks it."""
    if isinstance(functions, (str, bytes)) or not functions:
        raise ValueError(
            "`functions` must be a non-empty list of (reduction, p) pairs such as "
            f"[('sum', 2), ('max', 1)], got {functions!r}."
        )
    checked = []
    for function in functions:
        if not (isinstance(function, (list, tuple)) and len(function) == 2):
            raise ValueError(
                f"Each entry of `functions` must be a (reduction, p) pair, got {function!r}."
            )
        reduction, p = function
        check_attention_args(p, reduction)
        checked.append((reduction, p))
    return checked


def _draw(columns, path, overwrite: bool, dpi: int) -> Figure:
    """A grid of pictures, one column per `(title, (B, H, W, 3) pictures)`, saved as PNG."""
    from matplotlib.figure import Figure

    rows = len(columns[0][1])
    figure = Figure(figsize=(_CELL * len(columns), _CELL * rows), dpi=dpi, layout="constrained")
    axes = figure.subplots(rows, len(columns), squeeze=False)
    for col, (title, pictures) in enumerate(columns):
        axes[0, col].set_title(title, fontsize=9)
        for row in range(rows):
            axes[row, col].imshow(pictures[row], interpolation="nearest")
            axes[row, col].set_axis_off()
    if path is not None:
        directory = os.path.dirname(os.fspath(path))
        if directory:
            os.makedirs(directory, exist_ok=True)
        # "x" mode: a file that appeared since the check above is not overwritten either.
        with open(path, "wb" if overwrite else "xb") as file:
            figure.savefig(file, format="png", dpi=dpi)
    return figure


def _image_batch(images) -> np.ndarray:
    images = np.asarray(ops.convert_to_numpy(images), dtype="float32")
    if images.ndim != 4:
        raise ValueError(
            f"`images` must be a batch of shape (B, H, W, C), got shape {images.shape}."
        )
    return images
