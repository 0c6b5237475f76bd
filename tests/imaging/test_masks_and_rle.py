import numpy as np
import pytest

from nucleus_segmentation.imaging.masks import MaskError, merge_nucleus_masks, nucleus_areas
from nucleus_segmentation.imaging.rle import (
    labels_to_rles,
    rle_decode,
    rle_encode,
    rles_to_labels,
)
from tests.conftest import disk


def test_merge_gives_ids_in_order_and_exact_areas():
    shape = (30, 40)
    a, b = disk(shape, (10, 10), 4), disk(shape, (20, 30), 5)
    merged = merge_nucleus_masks([a, b * 255], ["a.png", "b.png"], shape)
    assert merged.labels.dtype == np.uint16
    assert set(np.unique(merged.labels)) == {0, 1, 2}
    assert (merged.labels == 1).sum() == a.sum()
    assert (merged.labels == 2).sum() == b.sum()
    assert merged.empty == [] and merged.overlaps == []
    np.testing.assert_array_equal(nucleus_areas(merged.labels), [a.sum(), b.sum()])


def test_merge_drops_and_reports_empty_mask():
    shape = (10, 10)
    merged = merge_nucleus_masks(
        [np.zeros(shape, np.uint8), disk(shape, (5, 5), 2)], ["empty.png", "real.png"], shape
    )
    assert merged.empty == ["empty.png"]
    assert merged.labels.max() == 1


def test_merge_rejects_mask_of_other_size():
    with pytest.raises(MaskError, match=r"b.png: mask is 10x12 but its image is 10x10"):
        merge_nucleus_masks(
            [disk((10, 10), (5, 5), 2), disk((10, 12), (5, 5), 2)], ["a.png", "b.png"], (10, 10)
        )


def test_merge_rejects_large_overlap_naming_both_files():
    shape = (20, 20)
    with pytest.raises(MaskError, match=r"b.png: overlaps nucleus mask a.png on \d+ pixels"):
        merge_nucleus_masks(
            [disk(shape, (10, 10), 4), disk(shape, (10, 12), 4)],
            ["a.png", "b.png"],
            shape,
            max_overlap_fraction=0.1,
        )


def test_merge_tolerates_small_overlap_leaving_pixels_to_first_mask():
    shape = (20, 20)
    a = np.zeros(shape, np.uint8)
    a[5:10, 5:10] = 1
    b = np.zeros(shape, np.uint8)
    b[9:15, 5:10] = 1  # shares row 9: 5 pixels of b's 30
    merged = merge_nucleus_masks([a, b], ["a.png", "b.png"], shape, max_overlap_fraction=0.2)
    assert merged.overlaps == [("b.png", "a.png", 5)]
    assert (merged.labels == 1).sum() == 25
    assert (merged.labels == 2).sum() == 25


def test_rle_matches_kaggle_convention():
    # Column-major, 1-based: pixels (0,0) and (1,0) are 1 and 2, (0,1) is 4 in a 3-row image.
    mask = np.zeros((3, 3), np.uint8)
    mask[0, 0] = mask[1, 0] = 1
    mask[0, 1] = 1
    mask[2, 2] = 1
    assert rle_encode(mask) == "1 2 4 1 9 1"
    np.testing.assert_array_equal(rle_decode("1 2 4 1 9 1", (3, 3)), mask)


def test_rle_run_continues_across_columns():
    mask = np.zeros((3, 2), np.uint8)
    mask[2, 0] = mask[0, 1] = 1  # foot of column 0 then head of column 1: one run
    assert rle_encode(mask) == "3 2"
    labels = mask.astype(np.uint16)
    assert labels_to_rles(labels) == ["3 2"]


def test_rle_round_trip_of_label_map_is_exact():
    rng = np.random.default_rng(0)
    labels = np.zeros((37, 23), np.uint16)
    for index in range(1, 9):
        r, c = rng.integers(0, 37), rng.integers(0, 23)
        labels[max(0, r - 3) : r + 3, max(0, c - 2) : c + 2] = index
    present = [i for i in range(1, 9) if (labels == i).any()]
    rles = labels_to_rles(labels)
    assert len(rles) == len(present)
    rebuilt = rles_to_labels(rles, labels.shape)
    # ids are renumbered 1..N in order; the partition is identical
    for new_id, old_id in enumerate(present, start=1):
        np.testing.assert_array_equal(rebuilt == new_id, labels == old_id)
    assert rle_encode(np.zeros((4, 4))) == ""


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1 2 3", "odd number"),
        ("a b", "not a list of integers"),
        ("0 2", "start below 1"),
        ("8 5", "runs past the end"),
    ],
)
def test_rle_decode_rejects_bad_text(text, problem):
    with pytest.raises(MaskError, match=problem):
        rle_decode(text, (3, 3), "row 7")


def test_rles_to_labels_rejects_overlap():
    with pytest.raises(MaskError, match="row 2: overlaps nucleus row 1"):
        rles_to_labels(["1 4", "3 2"], (3, 3), ["row 1", "row 2"])
