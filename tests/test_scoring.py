"""Scores of label maps against true ones, per image and per group, on exact cases."""

import numpy as np
import pytest

from nucleus_segmentation.scoring import dice_from_iou, nucleus_count, score_image, score_images


def square(labels, value, top, left, side):
    labels[top : top + side, left : left + side] = value
    return labels


def test_nuclei_are_counted_by_their_ids_with_or_without_background():
    assert nucleus_count(np.array([[0, 4, 4], [9, 0, 0]], np.uint16)) == 2
    assert nucleus_count(np.array([[5, 5], [6, 6]], np.int32)) == 2  # no background pixel
    assert nucleus_count(np.zeros((3, 3), np.uint16)) == 0


def test_a_perfect_prediction_scores_one_everywhere():
    truth = square(square(np.zeros((20, 20), np.uint16), 1, 2, 2, 4), 2, 10, 10, 5)
    scores = score_image(truth, truth.copy())
    assert scores["dsb_score"] == 1.0 and scores["f1"] == 1.0
    assert scores["miou"] == 1.0 and scores["nucleus_iou"] == 1.0 and scores["dice"] == 1.0
    assert scores["true_nuclei"] == scores["predicted_nuclei"] == scores["matched"] == 2
    assert scores["area_error"] == 0.0


def test_a_nucleus_drawn_one_pixel_wider_shows_in_the_area_error():
    truth = square(np.zeros((20, 20), np.uint16), 1, 5, 5, 4)  # 16 pixels
    loose = square(np.zeros((20, 20), np.uint16), 1, 4, 4, 6)  # 36 pixels, IoU 16/36
    scores = score_image(truth, loose)
    assert scores["nucleus_iou"] == pytest.approx(16 / 36)
    assert scores["matched"] == 0  # IoU 0.44 < 0.5: no match, so no area error
    assert np.isnan(scores["area_error"])
    assert scores["dsb_score"] == 0.0 and scores["recall"] == 0.0
    tighter = square(np.zeros((20, 20), np.uint16), 1, 4, 4, 5)  # 25 pixels, IoU 16/25
    scores = score_image(truth, tighter)
    assert scores["matched"] == 1 and scores["area_error"] == pytest.approx(9 / 16)
    assert scores["dice"] == pytest.approx(dice_from_iou(16 / 25)) == pytest.approx(32 / 41)


def test_groups_pool_pixels_and_weight_the_area_error_by_matches():
    truth_a = square(square(np.zeros((10, 10), np.uint16), 1, 0, 0, 2), 2, 5, 5, 2)
    truth_b = square(np.zeros((10, 10), np.uint16), 1, 0, 0, 4)
    pred_a = truth_a.copy()  # two matches, area error 0
    pred_b = square(np.zeros((10, 10), np.uint16), 1, 0, 0, 5)  # IoU 16/25, area error 9/16
    truths, predictions = {"a": truth_a, "b": truth_b}, {"a": pred_a, "b": pred_b}
    per_image, per_group = score_images(truths, predictions, {"a": "x", "b": "y"})
    assert per_image["image_id"].tolist() == ["a", "b"]
    overall = per_group.set_index("group").loc["all"]
    assert overall["images"] == 2
    # pooled: 8 + 16 true nucleus pixels, 8 + 25 predicted, 24 in common
    assert overall["nucleus_iou_pooled"] == pytest.approx(24 / 33)
    assert overall["nucleus_iou_per_image"] == pytest.approx((1 + 16 / 25) / 2)
    assert overall["area_error"] == pytest.approx((0 + 0 + 9 / 16) / 3)  # per matched nucleus
    assert overall["dsb_score"] == pytest.approx(per_image["dsb_score"].mean())
    assert per_group["group"].tolist() == ["x", "y", "all"]


def test_split_and_merged_nuclei_are_counted_and_summed_per_group():
    from nucleus_segmentation.imaging.matching import split_merge_counts

    truth = square(square(np.zeros((20, 30), np.uint16), 1, 2, 2, 6), 2, 2, 8, 6)  # touching
    truth = square(truth, 3, 12, 2, 6)
    merged = square(square(np.zeros_like(truth), 5, 2, 2, 6), 5, 2, 8, 6)  # 1 + 2 as one
    merged = square(merged, 6, 12, 2, 3)  # nucleus 3 in two halves
    merged = square(merged, 7, 12, 5, 3)
    assert split_merge_counts(truth, merged) == (1, 1)
    assert split_merge_counts(truth, truth) == (0, 0)
    assert split_merge_counts(truth, np.zeros_like(truth)) == (0, 0)
    scores = score_image(truth, merged)
    assert (scores["split"], scores["merged"]) == (1, 1)
    _, per_group = score_images(
        {"a": truth, "b": truth}, {"a": merged, "b": truth}, {"a": "x", "b": "x"}
    )
    overall = per_group.set_index("group").loc["all"]
    assert (overall["split"], overall["merged"]) == (1, 1)
