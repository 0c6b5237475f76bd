"""Nearest-neighbour x2 upsampling and the 3x3 convolution after it, computed at low resolution.

The decoder enlarges the features by repeating every pixel 2 x 2 and then convolves them with
a 3x3 kernel. On the repeated map each output pixel of phase ``(a, b)`` (its row and column
parity) sees only 2 x 2 distinct input pixels, so the same result is four 2x2 convolutions of
the small map, one per phase, whose kernels are sums of the 3x3 kernel's taps:

- rows of phase 0 read input rows ``i - 1`` (tap 0) and ``i`` (taps 1 + 2);
- rows of phase 1 read input rows ``i`` (taps 0 + 1) and ``i + 1`` (tap 2);

and the same for columns. The four phases are one 2x2 convolution with four times the
output channels over the input padded by one pixel, interleaved back to the large grid:
4 instead of 9 multiply-adds per output pixel and channel pair, and the repeated map is never
written. Same outputs up to float rounding (zero padding at the border included), so like the
BatchNorm folding (:mod:`~nucleus_segmentation.model.folding`) it is a prediction-time
rewrite of a trained model (:func:`phase_upsampling`), never saved and never trained.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
from keras import layers, ops

from nucleus_segmentation.model.layers import PACKAGE
from nucleus_segmentation.model.rewrite import fed_only_by, rewritten

# Phase p of the two along one axis: which 3x3 taps each of its two 2x2 taps sums.
_TAPS = {0: ((0,), (1, 2)), 1: ((0, 1), (2,))}
PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))
# model -> its rewritten clone and the (upsampling name, convolution name) pairs rewritten.
_PHASED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def phase_kernels(kernel: np.ndarray) -> np.ndarray:
    """``(3, 3, C_in, C)`` kernel of a convolution after x2 nearest upsampling -> the
    ``(2, 2, C_in, 4 C)`` kernel of its four phases on the small map, in :data:`PHASES`
    order (row parity, column parity), each phase's ``C`` channels together."""
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.shape[:2] != (3, 3):
        raise ValueError(f"expected a 3x3 kernel, got shape {kernel.shape}")
    phases = []
    for a, b in PHASES:
        rows = [kernel[list(taps)].sum(axis=0) for taps in _TAPS[a]]  # 2 x (3, C_in, C)
        phases.append(
            np.stack([np.stack([row[list(taps)].sum(axis=0) for taps in _TAPS[b]]) for row in rows])
        )
    return np.concatenate(phases, axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PhasedUpsamplingConv2D(layers.Layer):
    """x2 nearest upsampling then a 3x3 'same' convolution (with bias and activation), taking
    the small map: ``(B, H, W, C_in)`` -> ``(B, 2H, 2W, filters)``. ``kernel`` holds the four
    phases' 2x2 kernels (:func:`phase_kernels`)."""

    def __init__(self, filters: int, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(2, 2, input_shape[-1], 4 * self.filters), name="kernel", initializer="zeros"
        )
        self.bias = self.add_weight(shape=(self.filters,), name="bias", initializer="zeros")

    def call(self, inputs):
        height, width = ops.shape(inputs)[1], ops.shape(inputs)[2]
        # Output (i, j) of the padded map's convolution covers input rows i - 1, i and
        # columns j - 1, j: phase 0 takes i = 0..H-1, phase 1 i = 1..H. The bias goes on right
        # after the convolution (as in Conv2D, where the backend can fuse them): channel by
        # channel, it commutes with the interleaving; the activation (which may mix
        # channels) comes after it.
        padded = ops.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]])
        phased = ops.conv(padded, self.kernel, padding="valid", data_format="channels_last")
        phased = ops.add(phased, ops.tile(self.bias, [len(PHASES)]))
        c = self.filters
        parts = [
            phased[:, a : a + height, b : b + width, index * c : (index + 1) * c]
            for index, (a, b) in enumerate(PHASES)
        ]
        rows = [
            ops.reshape(ops.stack(parts[2 * a : 2 * a + 2], axis=3), (-1, height, 2 * width, c))
            for a in (0, 1)
        ]
        return self.activation(ops.reshape(ops.stack(rows, axis=2), (-1, 2 * height, 2 * width, c)))

    def compute_output_shape(self, input_shape):
        grow = [None if side is None else 2 * side for side in input_shape[1:3]]
        return (input_shape[0], *grow, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, activation=keras.activations.serialize(self.activation))
        return config


def phaseable(model) -> dict[str, str]:
    """``{upsampling name: convolution name}`` for each top-level x2 nearest UpSampling2D
    (channels last) that feeds only a 3x3, stride 1, undilated, 'same', ungrouped Conv2D
    (channels last) which reads nothing else, each layer called once."""
    pairs = {}
    for source, layer in fed_only_by(model, layers.Conv2D):
        if (
            isinstance(source, layers.UpSampling2D)
            and tuple(source.size) == (2, 2)
            and source.interpolation == "nearest"
            and source.data_format == "channels_last"
            and tuple(layer.kernel_size) == (3, 3)
            and tuple(layer.strides) == (1, 1)
            and tuple(layer.dilation_rate) == (1, 1)
            and layer.padding == "same"
            and layer.groups == 1
            and layer.data_format == "channels_last"
        ):
            pairs[source.name] = layer.name
    return pairs


def _phased_weights(conv) -> list[np.ndarray]:
    kernel = keras.ops.convert_to_numpy(conv.kernel)
    bias = keras.ops.convert_to_numpy(conv.bias) if conv.use_bias else np.zeros(conv.filters)
    dtype = conv.kernel.dtype  # float32 in every precision policy (mixed ones included)
    return [phase_kernels(kernel).astype(dtype), np.asarray(bias).astype(dtype)]


def _copy_weights(model, phased, pairs: dict[str, str]) -> None:
    convs = set(pairs.values())
    for layer in model.layers:
        if not layer.weights:
            continue
        target = phased.get_layer(layer.name)
        target.set_weights(_phased_weights(layer) if layer.name in convs else layer.get_weights())


def _rephase(layer, pairs: dict[str, str]):
    policy = layer.dtype_policy.name
    if layer.name in pairs:
        return layers.Identity(name=layer.name, dtype=policy)
    if layer.name in pairs.values():
        return PhasedUpsamplingConv2D(
            layer.filters, activation=layer.activation, name=layer.name, dtype=policy
        )
    return layer.__class__.from_config(layer.get_config())


def phase_upsampling(model, refresh: bool = False):
    """``model`` with each x2 nearest upsampling and the 3x3 convolution after it
    (:func:`phaseable`) computed as one :class:`PhasedUpsamplingConv2D` on the small map (the
    upsampling layer becomes an identity): a clone, made once per model; ``refresh`` gives it
    the model's current weights again (a model that trains on between calls). The model
    itself when nothing matches, and objects that are not Keras functional models (test
    doubles) as they are."""
    return rewritten(model, _PHASED, refresh, phaseable, _rephase, _copy_weights)
