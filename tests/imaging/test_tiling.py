"""Tiled prediction: tile placement, which tile fills each pixel, and seamless stitching."""

import numpy as np
import pytest

from nucleus_segmentation.imaging.tiling import AxisTile, axis_tiles, predict_tiled, tile_grid


def echo(tiles):
    """A "model" whose probability is its input: any stitching mistake shows."""
    return [tile.astype(np.float32) / 255 for tile in tiles]


def box_mean(tiles):
    """A translation-equivariant "model" with a 5x5 receptive field (mirror at the input's
    border, as a network sees its own padding): right only far enough from a tile edge."""
    results = []
    for tile in tiles:
        padded = np.pad(tile.astype(np.float32), 2, mode="reflect")
        height, width = tile.shape
        total = sum(padded[dy : dy + height, dx : dx + width] for dy in range(5) for dx in range(5))
        results.append(total / 25)
    return results


def edge_distance(tiles):
    """A "model" answering how far each pixel is from its tile's nearest edge."""
    results = []
    for tile in tiles:
        rows, cols = np.indices(tile.shape)
        height, width = tile.shape
        nearest = np.minimum.reduce([rows, cols, height - 1 - rows, width - 1 - cols])
        results.append(nearest.astype(np.float32))
    return results


def test_axis_tiles_fit_cover_and_split_overlaps_at_the_middle():
    assert axis_tiles(300, 512, 64) == [AxisTile(0, 300, 0, 300)]
    assert axis_tiles(512, 512, 64) == [AxisTile(0, 512, 0, 512)]
    # 1000 px in 512-px tiles overlapping >= 64: two would share only 24 px, so three, spread
    # evenly (0, 244, 488); boundaries halfway between the centres 255.5, 499.5 and 743.5.
    assert axis_tiles(1000, 512, 64) == [
        AxisTile(0, 512, 0, 378),
        AxisTile(244, 756, 378, 622),
        AxisTile(488, 1000, 622, 1000),
    ]
    tiles = axis_tiles(2000, 512, 64)
    assert len(tiles) == 5  # ceil((2000 - 64) / 448)
    assert [t.start for t in tiles] == [0, 372, 744, 1116, 1488]
    assert all(b.start - a.start <= 512 - 64 for a, b in zip(tiles[:-1], tiles[1:], strict=True))
    assert tiles[0].own_start == 0 and tiles[-1].own_stop == 2000
    assert all(a.own_stop == b.own_start for a, b in zip(tiles[:-1], tiles[1:], strict=True))
    assert all(t.start <= t.own_start < t.own_stop <= t.stop for t in tiles)


@pytest.mark.parametrize(("tile_size", "overlap"), [(0, 0), (64, 64), (64, -1)])
def test_impossible_tiles_are_refused(tile_size, overlap):
    with pytest.raises(ValueError, match="overlap < tile_size"):
        axis_tiles(100, tile_size, overlap)


def test_each_pixel_comes_from_the_tile_where_it_is_farthest_from_an_edge():
    shape, tile_size, overlap = (80, 112), 32, 8
    stitched = predict_tiled(edge_distance, np.zeros(shape, np.uint8), tile_size, overlap, 3)
    # Brute force over every tile that covers a pixel: the best distance it could get.
    best = np.full(shape, -1.0, np.float32)
    owners = np.zeros(shape, np.int32)
    for tile in tile_grid(shape, tile_size, overlap):
        window = best[tile.window]
        np.maximum(window, edge_distance([window])[0], out=window)
        owners[tile.owned] += 1
    np.testing.assert_array_equal(stitched, best)
    assert (owners == 1).all()  # every pixel filled exactly once


def test_tiled_prediction_of_an_equivariant_model_equals_whole_prediction():
    image = np.random.default_rng(0).integers(0, 256, (1000, 700), dtype=np.uint8)
    whole = box_mean([image])[0]
    for predict in (echo, box_mean):
        tiled = predict_tiled(predict, image, tile_size=256, overlap=32, batch_size=4)
        assert tiled.shape == (1000, 700) and tiled.dtype == np.float32
        np.testing.assert_array_equal(tiled, predict([image])[0])
    np.testing.assert_array_equal(predict_tiled(box_mean, image, 256, 32), whole)


def test_small_images_are_predicted_whole_and_tiles_in_batches():
    calls = []

    def recording(tiles):
        calls.append([tile.shape for tile in tiles])
        return echo(tiles)

    predict_tiled(recording, np.zeros((64, 48), np.uint8), tile_size=64, overlap=8)
    assert calls == [[(64, 48)]]
    calls.clear()
    predict_tiled(recording, np.zeros((100, 60), np.uint8), tile_size=32, overlap=8, batch_size=5)
    # 4 rows x 3 columns of equal 32 x 32 tiles, at most 5 per call.
    assert [len(call) for call in calls] == [5, 5, 2]
    assert {shape for call in calls for shape in call} == {(32, 32)}
