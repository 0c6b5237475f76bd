"""PA, MPA, MIoU and nucleus IoU: numpy and keras.ops twins on the same hand-computed cases."""

from fractions import Fraction

import numpy as np
import pytest

from nucleus_segmentation.model.metrics import (
    class_iou,
    confusion_matrix,
    evaluate_segmentation,
    mean_iou,
    mean_pixel_accuracy,
    nucleus_iou,
    pixel_accuracy,
    scores_from_confusion,
)

# Keras' TensorFlow backend calls np.array(x, copy=False) on tensors (numpy 2 warns).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# 4 x 4: a 2 x 2 nucleus; the prediction shifts one pixel of it to the right.
TRUTH = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=np.uint8)
PRED = np.array([[0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=np.uint8)
CM = np.array([[11, 1], [1, 3]])
# PA = 14/16; MPA = (11/12 + 3/4) / 2; IoU = 11/13 (background) and 3/5 (nucleus).
EXPECTED = {
    "pa": Fraction(7, 8),
    "mpa": Fraction(5, 6),
    "miou": (Fraction(11, 13) + Fraction(3, 5)) / 2,
    "nucleus_iou": Fraction(3, 5),
}

# A 2 x 2 image without nuclei, predicted with one false nucleus pixel.
EMPTY_TRUTH = np.zeros((2, 2), dtype=np.uint8)
EMPTY_PRED = np.array([[0, 1], [0, 0]], dtype=np.uint8)


def _one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(2, dtype="float32")[labels]


def test_confusion_matrix_numpy():
    np.testing.assert_array_equal(confusion_matrix(TRUTH, PRED), CM)
    assert confusion_matrix(TRUTH, PRED).dtype == np.int64


def test_scores_numpy_exact():
    assert pixel_accuracy(CM) == float(EXPECTED["pa"])
    assert mean_pixel_accuracy(CM) == pytest.approx(float(EXPECTED["mpa"]), abs=1e-15)
    assert mean_iou(CM) == pytest.approx(float(EXPECTED["miou"]), abs=1e-15)
    assert nucleus_iou(CM) == pytest.approx(0.6, abs=1e-15)
    assert scores_from_confusion(CM) == pytest.approx({k: float(v) for k, v in EXPECTED.items()})


def test_undefined_classes_are_left_out():
    cm = confusion_matrix(EMPTY_TRUTH, EMPTY_PRED)
    np.testing.assert_array_equal(cm, [[3, 1], [0, 0]])
    # No true nucleus: MPA is the background accuracy alone; the nucleus IoU is 0/1 = 0.
    assert mean_pixel_accuracy(cm) == 0.75
    np.testing.assert_allclose(class_iou(cm), [0.75, 0.0])
    perfect = confusion_matrix(EMPTY_TRUTH, EMPTY_TRUTH)
    assert np.isnan(nucleus_iou(perfect))
    assert mean_iou(perfect) == 1.0


def test_confusion_matrix_rejects_bad_labels():
    with pytest.raises(ValueError, match="0..1"):
        confusion_matrix(TRUTH, PRED + 1)
    with pytest.raises(ValueError, match="pixels"):
        confusion_matrix(TRUTH, PRED[:2])


def test_evaluate_pooled_and_per_image():
    results = evaluate_segmentation([TRUTH, EMPTY_TRUTH], [PRED, EMPTY_PRED])
    assert results["images"] == 2
    # Pooled: CM + [[3, 1], [0, 0]] = [[14, 2], [1, 3]].
    assert results["pa_pooled"] == pytest.approx(17 / 20)
    assert results["mpa_pooled"] == pytest.approx((14 / 16 + 3 / 4) / 2)
    assert results["miou_pooled"] == pytest.approx((14 / 17 + 3 / 6) / 2)
    assert results["nucleus_iou_pooled"] == pytest.approx(1 / 2)
    # Per image: the mean of each image's own score.
    assert results["pa_per_image"] == pytest.approx((7 / 8 + 3 / 4) / 2)
    assert results["mpa_per_image"] == pytest.approx((5 / 6 + 3 / 4) / 2)
    assert results["miou_per_image"] == pytest.approx((float(EXPECTED["miou"]) + 3 / 8) / 2)
    assert results["nucleus_iou_per_image"] == pytest.approx((3 / 5 + 0) / 2)


def test_per_image_skips_undefined_nucleus_iou():
    results = evaluate_segmentation([TRUTH, EMPTY_TRUTH], [PRED, EMPTY_TRUTH])
    assert results["nucleus_iou_per_image"] == pytest.approx(0.6)
    assert results["miou_per_image"] == pytest.approx((float(EXPECTED["miou"]) + 1.0) / 2)
