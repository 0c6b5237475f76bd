"""x2 nearest upsampling + 3x3 convolution as four phase convolutions: same outputs."""

import keras
import numpy as np
import pytest
from keras import layers

from nucleus_segmentation.model import UNetConfig, build_attention_unet
from nucleus_segmentation.model.folding import for_prediction
from nucleus_segmentation.model.precision import model_precision
from nucleus_segmentation.model.upsampling import (
    PhasedUpsamplingConv2D,
    phase_kernels,
    phase_upsampling,
    phaseable,
)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TINY = UNetConfig(base_filters=4, aspp_filters=8)


def _upsample_then_convolve(x, kernel, bias, activation=None):
    """The reference: repeat every pixel 2 x 2, then the 3x3 'same' convolution."""
    inputs = keras.Input(x.shape[1:])
    up = layers.UpSampling2D(2, interpolation="nearest")(inputs)
    conv = layers.Conv2D(kernel.shape[-1], 3, padding="same", activation=activation)
    model = keras.Model(inputs, conv(up))
    conv.set_weights([kernel, bias])
    return np.asarray(model.predict_on_batch(x))


@pytest.mark.parametrize(("height", "width", "activation"), [(5, 7, None), (4, 4, "relu")])
def test_the_phase_layer_equals_upsampling_then_convolution_borders_included(
    height, width, activation
):
    rng = np.random.default_rng(height)
    x = rng.normal(size=(2, height, width, 3)).astype("float32")
    kernel = rng.normal(size=(3, 3, 3, 5)).astype("float32")
    bias = rng.normal(size=5).astype("float32")
    layer = PhasedUpsamplingConv2D(5, activation=activation)
    layer.build(x.shape)
    layer.set_weights([phase_kernels(kernel).astype("float32"), bias])

    out = np.asarray(layer(x))

    assert out.shape == (2, 2 * height, 2 * width, 5)
    np.testing.assert_allclose(out, _upsample_then_convolve(x, kernel, bias, activation), atol=1e-4)


def test_phase_kernels_sum_the_taps_each_phase_reads():
    kernel = np.arange(9, dtype=float).reshape(3, 3, 1, 1)  # tap (r, c) holds 3 r + c
    phases = phase_kernels(kernel)[:, :, 0, :]
    # Phase (0, 0): rows {0}, {1, 2}; columns {0}, {1, 2}.
    np.testing.assert_array_equal(phases[:, :, 0], [[0, 1 + 2], [3 + 6, 4 + 5 + 7 + 8]])
    # Phase (1, 1): rows {0, 1}, {2}; columns {0, 1}, {2}.
    np.testing.assert_array_equal(phases[:, :, 3], [[0 + 1 + 3 + 4, 2 + 5], [6 + 7, 8]])
    assert phases.sum(axis=(0, 1)).tolist() == [36.0] * 4  # every tap once per phase
    with pytest.raises(ValueError, match="3x3"):
        phase_kernels(np.zeros((5, 5, 1, 1)))


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_attention_unet(TINY)


def test_every_decoder_upsampling_is_rewritten_and_the_outputs_stay_the_same(model):
    phased = phase_upsampling(model)

    pairs = phaseable(model)
    assert pairs == {f"dec{level}_up": f"dec{level}_up_conv1" for level in range(TINY.depth)}
    assert not any(isinstance(layer, layers.UpSampling2D) for layer in phased.layers)
    for conv in pairs.values():
        assert isinstance(phased.get_layer(conv), PhasedUpsamplingConv2D)
    x = np.random.default_rng(1).random((2, 48, 32, 1)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(phased.predict_on_batch(x)), np.asarray(model.predict_on_batch(x)), atol=1e-5
    )
    assert phase_upsampling(model) is phased  # rewritten once per model


def test_the_rewritten_clone_follows_weights_that_change_only_when_refreshed():
    keras.utils.set_random_seed(1)
    model = build_attention_unet(TINY)
    phased = phase_upsampling(model)
    x = np.random.default_rng(2).random((1, 32, 32, 1)).astype("float32")
    before = np.asarray(phased.predict_on_batch(x))
    conv = model.get_layer("dec0_up_conv1")
    conv.set_weights([w * 3.0 for w in conv.get_weights()])  # the next epoch's weights

    np.testing.assert_array_equal(np.asarray(phase_upsampling(model).predict_on_batch(x)), before)
    again = phase_upsampling(model, refresh=True)
    assert again is phased
    np.testing.assert_allclose(
        np.asarray(again.predict_on_batch(x)), np.asarray(model.predict_on_batch(x)), atol=1e-5
    )
    assert np.abs(np.asarray(again.predict_on_batch(x)) - before).max() > 1e-3


def test_upsamplings_that_are_not_nearest_x2_into_a_3x3_convolution_are_left_alone():
    inputs = keras.Input((8, 8, 2))
    bilinear = layers.UpSampling2D(2, interpolation="bilinear", name="bilinear")(inputs)
    wide = layers.UpSampling2D(2, name="into_5x5")(inputs)
    shared = layers.UpSampling2D(2, name="shared")(inputs)
    output = layers.UpSampling2D(2, name="also_an_output")(inputs)
    outputs = layers.Concatenate()(
        [
            layers.Conv2D(2, 3, padding="same", name="after_bilinear")(bilinear),
            layers.Conv2D(2, 5, padding="same", name="conv_5x5")(wide),
            layers.Conv2D(2, 3, padding="same", name="after_shared")(shared),
            shared,  # the repeated map is used as well: it must stay
            layers.Conv2D(2, 3, padding="same", name="after_output")(output),
        ]
    )
    model = keras.Model(inputs, [outputs, output])  # the repeated map is an output too
    assert phaseable(model) == {}
    assert phase_upsampling(model) is model
    double = object()
    assert phase_upsampling(double) is double


def test_prediction_in_bfloat16_keeps_the_rewrite_and_the_provenance(model):
    model.loaded_from = "provenance"
    try:
        ready = for_prediction(model, "mixed_bfloat16")
    finally:
        del model.loaded_from
    assert model_precision(ready) == "mixed_bfloat16"
    assert isinstance(ready.get_layer("dec0_up_conv1"), PhasedUpsamplingConv2D)
    assert ready.loaded_from == "provenance"
    x = np.random.default_rng(3).random((2, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(ready.predict_on_batch(x)), np.asarray(model.predict_on_batch(x)), atol=0.05
    )


def test_prediction_refreshes_every_rewrite_of_a_model_that_trains_on():
    """Training's per-epoch validation: folded, phased and bfloat16 clones all take the
    model's new weights, BatchNorm statistics and up-convolutions included."""
    keras.utils.set_random_seed(4)
    model = build_attention_unet(TINY)
    ready = for_prediction(model, "mixed_bfloat16")
    x = np.random.default_rng(4).random((2, 32, 32, 1)).astype("float32")
    before = np.asarray(ready.predict_on_batch(x))
    rng = np.random.default_rng(5)
    for layer in model.layers:  # the next epoch
        if layer.name.startswith("dec") and layer.weights:
            layer.set_weights([w + rng.normal(0.0, 0.3, w.shape) for w in layer.get_weights()])

    again = for_prediction(model, "mixed_bfloat16", refresh=True)

    assert again is ready
    # What the same weights give when prepared from scratch (bfloat16 rounds the perturbed
    # network's near-tied logits either way, so it is compared with itself) ...
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    fresh = np.asarray(for_prediction(copy, "mixed_bfloat16").predict_on_batch(x))
    after = np.asarray(again.predict_on_batch(x))
    assert np.abs(fresh - before).max() > 0.1  # the change shows in the outputs
    np.testing.assert_allclose(after, fresh, atol=1e-6)
    # ... and in float32 the refreshed rewrites give the model's own outputs.
    expected = np.asarray(model.predict_on_batch(x))
    refreshed = for_prediction(model, "float32", refresh=True).predict_on_batch(x)
    np.testing.assert_allclose(np.asarray(refreshed), expected, atol=1e-3)
