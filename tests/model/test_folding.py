"""BatchNorm folded into the convolution before it: same predictions, fewer layers."""

import keras
import numpy as np
import pytest
from keras import layers

from nucleus_segmentation.model import UNetConfig, build_attention_unet
from nucleus_segmentation.model.folding import FoldedBatchNorm, fold_batch_norms, foldable
from nucleus_segmentation.model.precision import model_precision
from nucleus_segmentation.segment import SegmentationSettings, for_segmentation

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# SAP attention with channel expansion and ASPP: BatchNorms inside custom layers too.
TINY = UNetConfig(base_filters=4, aspp_filters=8)


def _images(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((2, 32, 32, 1)).astype("float32")


def _trained_statistics(model, seed: int) -> None:
    """BatchNorms as after training: statistics and affine terms far from their 0 / 1 start,
    so a wrong fold (a missing term, the variance for the deviation) shows in the outputs."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, variance = (w.shape for w in layer.get_weights())
            layer.set_weights(
                [
                    rng.uniform(0.5, 2.0, gamma),
                    rng.normal(0.0, 0.5, beta),
                    rng.normal(0.0, 0.5, mean),
                    rng.uniform(0.2, 3.0, variance),
                ]
            )


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    built = build_attention_unet(TINY)
    _trained_statistics(built, 0)
    return built


def test_every_conv_block_norm_is_folded_and_the_outputs_stay_the_same(model):
    folded = fold_batch_norms(model)
    norms = [layer.name for layer in model.layers if isinstance(layer, layers.BatchNormalization)]

    assert norms and sorted(foldable(model).values()) == sorted(norms)
    assert not any(isinstance(layer, layers.BatchNormalization) for layer in folded.layers)
    passed_on = [layer.name for layer in folded.layers if isinstance(layer, FoldedBatchNorm)]
    assert sorted(passed_on) == sorted(norms)
    for conv in foldable(model):
        assert folded.get_layer(conv).use_bias and not model.get_layer(conv).use_bias
    # The custom layers keep their own normalisation (moving statistics included).
    kept = folded.get_layer("aspp").get_weights()
    assert len(kept) == len(model.get_layer("aspp").get_weights()) > 2
    for a, b in zip(kept, model.get_layer("aspp").get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = _images()
    expected = np.asarray(model.predict_on_batch(x))
    np.testing.assert_allclose(np.asarray(folded.predict_on_batch(x)), expected, atol=1e-5)
    assert fold_batch_norms(model) is folded  # folded once per model


def test_the_folded_clone_follows_weights_that_change_only_when_refreshed():
    keras.utils.set_random_seed(1)
    model = build_attention_unet(TINY)
    folded = fold_batch_norms(model)
    x = _images(1)
    before = np.asarray(folded.predict_on_batch(x))
    _trained_statistics(model, 1)  # the next epoch's statistics
    np.testing.assert_array_equal(np.asarray(fold_batch_norms(model).predict_on_batch(x)), before)
    again = fold_batch_norms(model, refresh=True)
    assert again is folded
    np.testing.assert_allclose(
        np.asarray(again.predict_on_batch(x)), np.asarray(model.predict_on_batch(x)), atol=1e-5
    )
    assert np.abs(np.asarray(again.predict_on_batch(x)) - before).max() > 1e-3


def test_a_convolution_that_feeds_more_than_its_norm_is_left_alone():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 1))
    conv = layers.Conv2D(3, 3, padding="same", use_bias=False, name="shared_conv")(inputs)
    normed = layers.BatchNormalization(name="norm")(conv)
    other = layers.Conv2D(3, 3, padding="same", name="relu_conv", activation="relu")(inputs)
    other_normed = layers.BatchNormalization(name="other_norm")(other)
    own = layers.Conv2D(3, 1, use_bias=False, name="own_conv")(inputs)
    own_normed = layers.BatchNormalization(name="own_norm")(own)
    outputs = layers.Add()([normed, conv, other_normed, own_normed])
    model = keras.Model(inputs, outputs)
    _trained_statistics(model, 2)
    # The first conv's output also reaches the sum, the second has an activation: neither
    # can take its norm's map; the third can.
    assert foldable(model) == {"own_conv": "own_norm"}
    folded = fold_batch_norms(model)
    assert isinstance(folded.get_layer("norm"), layers.BatchNormalization)
    assert isinstance(folded.get_layer("own_norm"), FoldedBatchNorm)
    x = np.random.default_rng(2).random((2, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(folded.predict_on_batch(x)), np.asarray(model.predict_on_batch(x)), atol=1e-5
    )


def test_segmentation_folds_then_sets_the_precision_and_keeps_the_provenance(model):
    model.loaded_from = "provenance"
    try:
        ready = for_segmentation(model, SegmentationSettings(precision="mixed_bfloat16"))
    finally:
        del model.loaded_from
    assert model_precision(ready) == "mixed_bfloat16"
    assert not any(isinstance(layer, layers.BatchNormalization) for layer in ready.layers)
    assert ready.loaded_from == "provenance"
    x = _images(3)
    np.testing.assert_allclose(
        np.asarray(ready.predict_on_batch(x)), np.asarray(model.predict_on_batch(x)), atol=0.05
    )


def test_what_has_nothing_to_fold_is_returned_as_it_is():
    inputs = keras.Input((8, 8, 1))
    plain = keras.Model(inputs, layers.Conv2D(2, 3, padding="same")(inputs))
    assert fold_batch_norms(plain) is plain
    double = object()
    assert fold_batch_norms(double) is double
