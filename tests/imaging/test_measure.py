"""The nuclei table on disks of known size, position and brightness."""

import numpy as np
import pytest

from nucleus_segmentation.imaging.measure import NUCLEUS_COLUMNS, gray_intensity, measure_nuclei
from tests.conftest import disk

SHAPE = (60, 90)
DISKS = [((20, 25), 6, 40000), ((40, 65), 9, 12345)]  # centre, radius, 16-bit value


def _scene():
    labels = np.zeros(SHAPE, np.uint16)
    image = np.full(SHAPE, 700, np.uint16)
    for index, (centre, radius, value) in enumerate(DISKS, start=1):
        inside = disk(SHAPE, centre, radius) > 0
        labels[inside] = index
        image[inside] = value
    return labels, image


def test_areas_centroids_boxes_and_16_bit_intensity_are_exact():
    labels, image = _scene()
    table = measure_nuclei(labels, image)
    assert list(table.columns) == list(NUCLEUS_COLUMNS)
    assert table["nucleus_id"].tolist() == [1, 2]
    for row, ((cy, cx), radius, value) in zip(table.itertuples(), DISKS, strict=True):
        assert row.area_px == int(disk(SHAPE, (cy, cx), radius).sum())
        assert (row.centroid_y, row.centroid_x) == (cy, cx)  # a disk is symmetric
        assert (row.bbox_min_y, row.bbox_min_x) == (cy - radius, cx - radius)
        assert (row.bbox_max_y, row.bbox_max_x) == (cy + radius + 1, cx + radius + 1)
        assert row.mean_intensity == value  # 16-bit units, not rescaled
    assert table["area_px"].tolist() == [113, 253]


def test_rgb_intensity_is_luma_in_the_image_units_and_alpha_is_ignored():
    labels, _ = _scene()
    rgba = np.zeros(SHAPE + (4,), np.uint8)
    rgba[labels == 1] = (200, 100, 50, 0)
    expected = 0.299 * 200 + 0.587 * 100 + 0.114 * 50
    table = measure_nuclei(labels, rgba)
    assert table["mean_intensity"].iloc[0] == pytest.approx(expected)
    assert table["mean_intensity"].iloc[1] == 0.0
    gray = np.arange(6, dtype=np.uint16).reshape(2, 3) * 10000
    np.testing.assert_array_equal(gray_intensity(gray), gray.astype(float))


def test_no_nuclei_gives_an_empty_table_with_the_columns():
    table = measure_nuclei(np.zeros(SHAPE, np.uint16), np.zeros(SHAPE, np.uint8))
    assert table.empty and list(table.columns) == list(NUCLEUS_COLUMNS)
    with pytest.raises(ValueError, match="labels are"):
        measure_nuclei(np.zeros(SHAPE, np.uint16), np.zeros((5, 5), np.uint8))
