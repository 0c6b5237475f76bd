"""Prediction of images larger than the network comfortably takes, in overlapping tiles.

Tiles are square windows of ``tile_size`` pixels (smaller only where the image is), spread
evenly so that neighbours share at least ``overlap`` pixels. Each output pixel is taken from
the tile whose centre is nearest to it, which is the tile where the pixel lies farthest from
a tile edge: the network saw the most context around it there, so there are no seams where a
tile's border effects would show. No resizing, so no distortion.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# HxW(xC) tiles -> one HxW float probability map per tile, same sizes.
Predict = Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]]


@dataclass(frozen=True)
class AxisTile:
    """One tile along one axis: it covers ``[start, stop)`` and fills ``[own_start, own_stop)``
    of the output (the pixels nearer its centre than any other tile's)."""

    start: int
    stop: int
    own_start: int
    own_stop: int


@dataclass(frozen=True)
class Tile:
    """A 2-D tile: ``window`` cuts it from the image, ``owned`` is the part of the output it
    fills (image coordinates) and ``inner`` the same pixels in tile coordinates."""

    window: tuple[slice, slice]
    owned: tuple[slice, slice]
    inner: tuple[slice, slice]


def axis_tiles(length: int, tile_size: int, overlap: int) -> list[AxisTile]:
    """Tiles along an axis of ``length`` pixels: one if it fits, else the fewest tiles of
    ``tile_size`` whose neighbours overlap by at least ``overlap``, spread evenly.

    Raises:
        ValueError: ``tile_size`` below 1, or ``overlap`` not in ``[0, tile_size)``.
    """
    if tile_size < 1 or not 0 <= overlap < tile_size:
        raise ValueError(
            f"tiles need tile_size >= 1 and 0 <= overlap < tile_size, got {tile_size}, {overlap}"
        )
    if length <= tile_size:
        return [AxisTile(0, length, 0, length)]
    count = math.ceil((length - overlap) / (tile_size - overlap))
    starts = [round(i * (length - tile_size) / (count - 1)) for i in range(count)]
    # Between two equal tiles the pixel nearer one centre is farther from that tile's edge;
    # the boundary is the midpoint of the centres (ties stay with the earlier tile).
    middles = [
        (a + b + tile_size - 1) // 2 + 1 for a, b in zip(starts[:-1], starts[1:], strict=True)
    ]
    bounds = [0, *middles, length]
    return [
        AxisTile(start, start + tile_size, bounds[i], bounds[i + 1])
        for i, start in enumerate(starts)
    ]


def tile_grid(shape: tuple[int, int], tile_size: int, overlap: int) -> list[Tile]:
    """Tiles covering an image of ``shape`` = (height, width), row by row.

    Every pixel is owned by exactly one tile. On a product grid the tile nearest along each
    axis is also the one whose nearer edge (of all four) is farthest away.
    """
    rows = axis_tiles(int(shape[0]), tile_size, overlap)
    columns = axis_tiles(int(shape[1]), tile_size, overlap)
    tiles = []
    for row in rows:
        for column in columns:
            tiles.append(
                Tile(
                    window=(slice(row.start, row.stop), slice(column.start, column.stop)),
                    owned=(
                        slice(row.own_start, row.own_stop),
                        slice(column.own_start, column.own_stop),
                    ),
                    inner=(
                        slice(row.own_start - row.start, row.own_stop - row.start),
                        slice(column.own_start - column.start, column.own_stop - column.start),
                    ),
                )
            )
    return tiles


def predict_tiled(
    predict: Predict,
    image: np.ndarray,
    tile_size: int = 1024,
    overlap: int = 64,
    batch_size: int = 4,
) -> np.ndarray:
    """HxW(xC) image -> HxW (or HxWxK, whatever ``predict`` gives per pixel) float32 map,
    predicted whole when both sides are at most ``tile_size``, else in overlapping tiles
    stitched by :func:`tile_grid`.

    ``predict`` gets up to ``batch_size`` tiles at a time (all of one size), so only one
    batch of tile predictions is held besides the output map.
    """
    height, width = image.shape[:2]
    if height <= tile_size and width <= tile_size:
        return np.asarray(predict([image])[0], dtype=np.float32)
    output = None
    tiles = tile_grid((height, width), tile_size, overlap)
    for first in range(0, len(tiles), max(1, int(batch_size))):
        chunk = tiles[first : first + max(1, int(batch_size))]
        predicted = predict([image[tile.window] for tile in chunk])
        if output is None:
            output = np.empty((height, width, *np.shape(predicted[0])[2:]), dtype=np.float32)
        for tile, probability in zip(chunk, predicted, strict=True):
            output[tile.owned] = probability[tile.inner]
    return output
