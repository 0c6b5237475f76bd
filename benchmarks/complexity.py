"""Model cost: multiply-accumulates of one forward pass, counted on any Keras backend."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import numpy as np

from nucleus_segmentation.model.upsampling import PhasedUpsamplingConv2D


@contextlib.contextmanager
def _recording(macs: list[int]) -> Iterator[None]:
    """Temporarily wrap convolution and dense layers' ``call`` to add up their MACs."""
    originals = {}

    def conv_macs(layer, inputs, outputs) -> int:
        kernel = int(np.prod(layer.kernel_size))
        out_positions = int(np.prod(outputs.shape[1:-1]))
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            return out_positions * kernel * int(outputs.shape[-1])
        in_channels = int(inputs.shape[-1]) // getattr(layer, "groups", 1)
        return out_positions * kernel * in_channels * int(outputs.shape[-1])

    def dense_macs(layer, inputs, outputs) -> int:
        return int(np.prod(outputs.shape[1:])) * int(inputs.shape[-1])

    def phased_macs(layer, inputs, outputs) -> int:
        # One 2x2 convolution with 4 x filters outputs over the input padded by one pixel.
        height, width, in_channels = (int(side) for side in inputs.shape[1:])
        return (height + 1) * (width + 1) * 4 * in_channels * 4 * layer.filters

    counters = {
        PhasedUpsamplingConv2D: phased_macs,
        keras.layers.DepthwiseConv2D: conv_macs,
        keras.layers.Conv2D: conv_macs,
        keras.layers.Dense: dense_macs,
    }
    for cls, counter in counters.items():
        original = cls.call
        originals[cls] = original

        def wrapped(self, inputs, *args, _original=original, _counter=counter, **kwargs):
            outputs = _original(self, inputs, *args, **kwargs)
            macs.append(_counter(self, inputs, outputs))
            return outputs

        cls.call = wrapped
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.call = original


def count_multiply_adds(model: keras.Model, height: int, width: int | None = None) -> int:
    """Multiply-accumulate operations of one forward pass on one ``height x width`` image
    (convolutions and dense layers; normalisation and activations are negligible).
    FLOPs are about twice this; a training step about three times the forward FLOPs."""
    width = height if width is None else width
    macs: list[int] = []
    channels = int(model.inputs[0].shape[-1])
    with _recording(macs):
        model(np.zeros((1, height, width, channels), np.float32), training=False)
    return int(sum(macs))
