"""Weighted cross-entropy, soft Dice and median-frequency weights on hand-computed cases."""

import keras
import numpy as np
import pytest

from nucleus_segmentation.model.losses import (
    PixelWeightedCrossEntropy,
    median_frequency_class_weights,
    soft_dice_loss,
    weighted_cross_entropy,
)

# Keras' TensorFlow backend calls np.array(x, copy=False) on tensors (numpy 2 warns).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# One image, 1 x 2 pixels: truth (background, nucleus); nucleus probabilities 0.2 and 0.6.
Y_TRUE = np.array([[[0, 1]]], dtype="uint8")
Y_PRED = np.array([[[[0.8, 0.2], [0.4, 0.6]]]], dtype="float32")


def _np(tensor) -> np.ndarray:
    return keras.ops.convert_to_numpy(tensor)


def test_weighted_cross_entropy_per_pixel():
    loss = _np(weighted_cross_entropy(Y_TRUE, Y_PRED, class_weights=[0.5, 3.0]))
    np.testing.assert_allclose(loss, [[[-0.5 * np.log(0.8), -3.0 * np.log(0.6)]]], rtol=1e-6)


def test_sparse_with_channel_and_one_hot_labels_agree():
    sparse = _np(weighted_cross_entropy(Y_TRUE, Y_PRED))
    channel = _np(weighted_cross_entropy(Y_TRUE[..., None], Y_PRED))
    one_hot = _np(weighted_cross_entropy(np.eye(2, dtype="float32")[Y_TRUE], Y_PRED))
    np.testing.assert_allclose(channel, sparse)
    np.testing.assert_allclose(one_hot, sparse)


def test_cross_entropy_is_finite_for_a_certain_mistake():
    loss = _np(weighted_cross_entropy(Y_TRUE, np.array([[[[0.0, 1.0], [1.0, 0.0]]]], "float32")))
    np.testing.assert_allclose(loss, -np.log(1e-7), rtol=1e-5)


def test_soft_dice_loss_cases():
    truth = np.zeros((3, 4, 4), dtype="uint8")
    truth[0, 1:3, 1:3] = 1
    truth[1, 1:3, 1:3] = 1
    pred = np.eye(2, dtype="float32")[truth]
    pred[1] = np.eye(2, dtype="float32")[0]  # image 1 misses its 4 nucleus pixels
    loss = _np(soft_dice_loss(truth, pred, smooth=1.0))
    # Perfect: (2*4+1)/(8+1) = 1. Missed: (0+1)/(4+1) = 1/5. Empty and predicted empty: 1/1.
    np.testing.assert_allclose(loss, [0.0, 1.0 - 1.0 / 5.0, 0.0], atol=1e-6)


def test_loss_class_reduces_to_mean_cross_entropy_plus_dice():
    loss = PixelWeightedCrossEntropy(class_weights=[0.5, 3.0], dice_weight=2.0)
    value = float(_np(loss(Y_TRUE, Y_PRED)))
    ce = (-0.5 * np.log(0.8) - 3.0 * np.log(0.6)) / 2
    dice = 1 - (2 * 0.6 + 1) / (1 + 0.8 + 1)
    assert value == pytest.approx(ce + 2.0 * dice, rel=1e-5)


def test_loss_class_accepts_pixel_weights():
    loss = PixelWeightedCrossEntropy()
    value = float(_np(loss(Y_TRUE, Y_PRED, sample_weight=np.array([[[0.0, 1.0]]], "float32"))))
    assert value == pytest.approx(-np.log(0.6) / 2, rel=1e-5)


def test_loss_class_config_round_trip():
    loss = PixelWeightedCrossEntropy(class_weights=[0.5, 3.0], dice_weight=0.25)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss), safe_mode=True
    )
    assert isinstance(restored, PixelWeightedCrossEntropy)
    assert restored.get_config() == loss.get_config()


def test_loss_class_refuses_wrong_number_of_weights():
    with pytest.raises(ValueError, match="3 class weights for 2 classes"):
        PixelWeightedCrossEntropy(class_weights=[1.0, 1.0, 1.0])(Y_TRUE, Y_PRED)


def test_median_frequency_weights_exact():
    # Image A (2x2): 3 background, 1 nucleus. Image B (2x2): 4 background. Image C (1x4): 2 + 2.
    masks = [
        np.array([[0, 0], [0, 1]]),
        np.zeros((2, 2), dtype=np.uint8),
        np.array([[1, 0, 1, 0]]),
    ]
    # freq(bg) = 9 / 12 = 3/4 (present in all 12 pixels); freq(nucleus) = 3 / 8 (A and C).
    # median = (3/4 + 3/8) / 2 = 9/16 -> weights 9/16 / (3/4) = 3/4 and 9/16 / (3/8) = 3/2.
    weights = median_frequency_class_weights(masks, num_classes=2)
    np.testing.assert_allclose(weights, [0.75, 1.5], rtol=0, atol=1e-15)


def test_median_frequency_weights_absent_class_and_errors():
    weights = median_frequency_class_weights([np.array([[0, 1], [1, 1]])], num_classes=3)
    # Present classes: freq 1/4 and 3/4, median 1/2 -> 2 and 2/3; class 2 never occurs -> 0.
    np.testing.assert_allclose(weights, [2.0, 2.0 / 3.0, 0.0])
    with pytest.raises(ValueError, match="0..1"):
        median_frequency_class_weights([np.array([[0, 2]])], num_classes=2)
    with pytest.raises(ValueError, match="at least one"):
        median_frequency_class_weights([], num_classes=2)
