"""Custom layers: exact pooling values, LRN formula, attention range, BatchNorm against
Keras' own, config round trips."""

import keras
import numpy as np
import pytest

from nucleus_segmentation.model.layers import (
    ASPP,
    AdaptiveAveragePooling2D,
    AttentionFusion,
    BatchNormalization,
    ChannelAttention,
    ChannelExpansion,
    LocalResponseNormalization,
)

# Keras' TensorFlow backend calls np.array(x, copy=False) on tensors (numpy 2 warns).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _reference_adaptive_pool(image: np.ndarray, bins: tuple[int, int]) -> np.ndarray:
    """Loop version of PyTorch's adaptive average pooling for one HxWxC image."""
    height, width, _ = image.shape
    out = np.zeros((*bins, image.shape[2]))
    for i in range(bins[0]):
        top, bottom = (i * height) // bins[0], -((-(i + 1) * height) // bins[0])
        for j in range(bins[1]):
            left, right = (j * width) // bins[1], -((-(j + 1) * width) // bins[1])
            out[i, j] = image[top:bottom, left:right].mean(axis=(0, 1))
    return out


@pytest.mark.parametrize(
    ("size", "bins"), [((8, 8), (4, 4)), ((5, 7), (4, 4)), ((2, 2), (4, 4)), ((6, 9), (3, 2))]
)
def test_adaptive_pooling_matches_reference(size, bins):
    rng = np.random.default_rng(0)
    x = rng.random((2, *size, 3)).astype("float32")
    pooled = keras.ops.convert_to_numpy(AdaptiveAveragePooling2D(bins)(x))
    expected = np.stack([_reference_adaptive_pool(image, bins) for image in x])
    assert pooled.shape == (2, *bins, 3)
    np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-6)


def test_adaptive_pooling_divisible_is_block_mean():
    x = np.arange(64, dtype="float32").reshape(1, 8, 8, 1)
    pooled = keras.ops.convert_to_numpy(AdaptiveAveragePooling2D(4)(x))
    expected = x.reshape(1, 4, 2, 4, 2, 1).mean(axis=(2, 4))
    np.testing.assert_allclose(pooled, expected)


def test_adaptive_pooling_with_unknown_size_inside_a_model():
    inputs = keras.Input((None, None, 2))
    model = keras.Model(inputs, AdaptiveAveragePooling2D((4, 4))(inputs))
    for side in (4, 12, 20):
        x = np.ones((1, side, side, 2), dtype="float32") * side
        out = model.predict(x, verbose=0)
        assert out.shape == (1, 4, 4, 2)
        np.testing.assert_allclose(out, side)


def test_lrn_within_channel_formula():
    # A constant image c: away from the zero-padded border every window mean is c^2.
    c = 0.5
    x = np.full((1, 9, 9, 1), c, dtype="float32")
    out = keras.ops.convert_to_numpy(LocalResponseNormalization(radius=2)(x))
    np.testing.assert_allclose(out[0, 2:-2, 2:-2, 0], c / np.sqrt(1 + c**2), rtol=1e-6)
    # The corner window holds 9 of 25 pixels: mean 9 c^2 / 25.
    np.testing.assert_allclose(out[0, 0, 0, 0], c / np.sqrt(1 + 9 * c**2 / 25), rtol=1e-6)


def test_lrn_across_channels_on_one_channel_is_pointwise():
    x = np.random.default_rng(1).random((2, 6, 6, 1)).astype("float32")
    layer = LocalResponseNormalization(radius=2, alpha=2.0, beta=0.75, mode="across_channels")
    out = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(out, x / (1 + 2.0 * x**2 / 5) ** 0.75, rtol=1e-5)


@pytest.mark.parametrize(
    ("attention", "expansion", "upper"),
    [("sap", True, 2.0), ("gap", True, 2.0), ("sap", False, 1.0), ("none", True, 1.0)],
)
def test_attention_weight_range(attention, expansion, upper):
    rng = np.random.default_rng(2)
    # Large values push the sigmoids towards their limits; the weight must stay inside.
    high = (rng.normal(size=(3, 8, 8, 6)) * 5).astype("float32")
    low = (rng.normal(size=(3, 8, 8, 4)) * 5).astype("float32")
    layer = AttentionFusion(6, 4, attention=attention, channel_expansion=expansion, grid=(4, 4))
    out = keras.ops.convert_to_numpy(layer([high, low], training=True))
    weight = keras.ops.convert_to_numpy(layer.attention_weight([high, low], training=True))
    assert weight.shape == (3, 1, 1, 6)
    assert np.all(weight > 0) and np.all(weight < upper)
    np.testing.assert_allclose(out, high * weight, rtol=1e-5, atol=1e-5)


def test_attention_weight_is_sum_of_both_terms():
    rng = np.random.default_rng(3)
    high = rng.random((2, 8, 8, 6)).astype("float32")
    low = rng.random((2, 8, 8, 4)).astype("float32")
    layer = AttentionFusion(6, 4)
    weight = keras.ops.convert_to_numpy(layer.attention_weight([high, low]))
    delta_high = keras.ops.convert_to_numpy(layer.high_attention(high))
    delta_low = keras.ops.convert_to_numpy(layer.expansion(low))
    np.testing.assert_allclose(weight, delta_high + delta_low, rtol=1e-6)


def test_fusion_without_any_term_is_refused():
    with pytest.raises(ValueError, match="no-op"):
        AttentionFusion(4, 4, attention="none", channel_expansion=False)


def test_channel_layers_shapes_and_ranges():
    x = np.random.default_rng(4).random((2, 5, 7, 8)).astype("float32")
    for layer, channels in [
        (ChannelAttention(8, "sap", (4, 4)), 8),
        (ChannelAttention(8, "gap"), 8),
        (ChannelExpansion(8, 16), 16),
    ]:
        out = keras.ops.convert_to_numpy(layer(x, training=False))
        assert out.shape == (2, 1, 1, channels)
        assert np.all((out > 0) & (out < 1))


def test_channel_attention_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="channels"):
        ChannelAttention(8)(np.zeros((1, 4, 4, 3), "float32"))


def test_aspp_keeps_size_and_sets_channels():
    x = np.random.default_rng(5).random((1, 4, 6, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(ASPP(5, (1, 2, 3))(x))
    assert out.shape == (1, 4, 6, 5)
    assert np.all(out >= 0)


@pytest.mark.parametrize(
    "layer",
    [
        LocalResponseNormalization(radius=3, alpha=0.5, mode="across_channels"),
        AdaptiveAveragePooling2D((3, 5)),
        ChannelAttention(8, "gap", (2, 3)),
        ChannelExpansion(4, 8),
        AttentionFusion(8, 4, attention="gap", channel_expansion=True, grid=(3, 3)),
        ASPP(16, (1, 3)),
        BatchNormalization(momentum=0.9, epsilon=1e-2),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_config_round_trip(layer):
    serialized = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object(serialized, safe_mode=True)
    assert type(restored) is type(layer)
    assert restored.get_config() == layer.get_config()


def _normalize_and_differentiate(layer, x, upstream, mask=None):
    """(outputs, d/dx, d/dgamma, d/dbeta of sum(outputs * upstream), moving mean, moving
    variance) of one training call of ``layer`` (built, gamma and beta set) on ``x``."""
    tf = pytest.importorskip("tensorflow")
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = layer(x, training=True, mask=mask)
        total = tf.reduce_sum(tf.cast(outputs, "float32") * upstream)
    grads = tape.gradient(total, [x, layer.gamma, layer.beta])
    values = [outputs, *grads, layer.moving_mean, layer.moving_variance]
    return [keras.ops.convert_to_numpy(keras.ops.cast(v, "float32")) for v in values]


def _twin_norms(shape, dtype="float32"):
    """Keras' BatchNormalization and the closed-form one, built for ``shape``, same
    non-trivial weights."""
    twins = [keras.layers.BatchNormalization(dtype=dtype), BatchNormalization(dtype=dtype)]
    channels = shape[-1]
    for layer in twins:
        layer.build(shape)
        layer.gamma.assign(np.linspace(0.5, 3.0, channels))
        layer.beta.assign(np.linspace(-1.0, 1.0, channels))
        layer.moving_mean.assign(np.full(channels, 0.25))
    return twins


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_batch_norm_training_matches_keras(dtype):
    # Same outputs, input and weight gradients and moving statistics as Keras' own layer;
    # channels with different means and spreads, so every term of the closed form counts.
    rng = np.random.default_rng(8)
    shape = (2, 5, 6, 4)
    x = (rng.normal(size=shape) * [1.0, 3.0, 0.2, 5.0] + [2.0, -1.0, 0.0, 7.0]).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    keras_norm, closed_form = _twin_norms(shape, dtype)
    expected = _normalize_and_differentiate(keras_norm, x, upstream)
    measured = _normalize_and_differentiate(closed_form, x, upstream)
    tolerance = 1e-5 if dtype == "float32" else 2e-2
    for name, want, got in zip(
        ["outputs", "dx", "dgamma", "dbeta", "moving mean", "moving variance"],
        expected,
        measured,
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance, err_msg=name)
    assert np.abs(expected[1]).max() > 0.1  # the input gradient is not trivially zero


def test_batch_norm_outside_plain_training_is_keras_own():
    # Inference, and a masked training call, go through Keras' code unchanged.
    rng = np.random.default_rng(9)
    shape = (2, 3, 4, 2)
    x = rng.normal(size=shape).astype("float32")
    keras_norm, closed_form = _twin_norms(shape)
    for layer in (keras_norm, closed_form):
        layer.moving_variance.assign([4.0, 0.25])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(closed_form(x, training=False)),
        keras.ops.convert_to_numpy(keras_norm(x, training=False)),
    )
    mask = np.zeros(shape[:-1], bool)
    mask[0] = True
    upstream = rng.normal(size=shape).astype("float32")
    np.testing.assert_allclose(
        _normalize_and_differentiate(closed_form, x, upstream, mask)[0],
        _normalize_and_differentiate(keras_norm, x, upstream, mask)[0],
        rtol=1e-6,
        atol=1e-6,
    )
