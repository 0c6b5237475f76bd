"""BatchNorm folded into the convolution before it, for inference.

At inference a BatchNormalization is a fixed per-channel affine map,
``y = (x - mean) * gamma / sqrt(var + eps) + beta``. After a convolution without an
activation it can live in that convolution instead: kernel ``* s`` and bias
``(b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``. Same outputs up to float
rounding, one pass less over every feature map: at full resolution those passes are memory
traffic the 2-core CPU pays for (docs/benchmarks.md, "Inference").

Only the model's own layers are folded (each ``conv -> BatchNorm`` of the U-Net's conv
blocks); the normalisations inside the custom layers (ASPP at 1/16 of the input, the
attention's pooled vectors) stay, as they are cheap. A folded model is for prediction only
(it has no BatchNorm left to train) and is never saved: segmentation folds the model it is
given, once per model (:func:`fold_batch_norms`).
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
from keras import layers

from nucleus_segmentation.model.layers import PACKAGE
from nucleus_segmentation.model.precision import with_precision
from nucleus_segmentation.model.rewrite import fed_only_by, rewritten
from nucleus_segmentation.model.upsampling import phase_upsampling

# model -> its folded clone and the (convolution, BatchNorm) names folded in it.
_FOLDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@keras.saving.register_keras_serializable(package=PACKAGE)
class FoldedBatchNorm(layers.Layer):
    """Where a BatchNormalization was: passes its input on unchanged (its affine map was
    folded into the convolution before it). Takes the ``mask`` and ``training`` arguments
    the graph recorded for the BatchNorm it stands in for."""

    def call(self, inputs, mask=None, training=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def foldable(model) -> dict[str, str]:
    """``{convolution name: BatchNorm name}`` for each top-level BatchNormalization whose input
    is a Conv2D without activation that feeds nothing else, each layer called once."""
    pairs = {}
    for source, layer in fed_only_by(model, layers.BatchNormalization):
        if (
            isinstance(source, layers.Conv2D)
            and source.activation is keras.activations.linear
            and layer.axis in (-1, len(layer.input.shape) - 1)
        ):
            pairs[source.name] = layer.name
    return pairs


def folded_weights(conv, norm) -> list[np.ndarray]:
    """Kernel and bias of ``conv`` with the inference map of BatchNorm ``norm`` folded in."""
    kernel = np.asarray(keras.ops.convert_to_numpy(conv.kernel), dtype=np.float64)
    bias = keras.ops.convert_to_numpy(conv.bias) if conv.use_bias else 0.0
    gamma = keras.ops.convert_to_numpy(norm.gamma) if norm.scale else 1.0
    beta = keras.ops.convert_to_numpy(norm.beta) if norm.center else 0.0
    mean = keras.ops.convert_to_numpy(norm.moving_mean)
    variance = keras.ops.convert_to_numpy(norm.moving_variance)
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(variance, np.float64) + norm.epsilon)
    dtype = conv.kernel.dtype  # float32 in every precision policy (mixed ones included)
    return [
        (kernel * scale).astype(dtype),
        ((np.asarray(bias, np.float64) - mean) * scale + beta).astype(dtype),
    ]


def _copy_weights(model, folded, pairs: dict[str, str]) -> None:
    norms = set(pairs.values())
    for layer in model.layers:
        if layer.name in norms or not layer.weights:  # inputs keep no name across clones
            continue
        target = folded.get_layer(layer.name)
        if layer.name in pairs:
            target.set_weights(folded_weights(layer, model.get_layer(pairs[layer.name])))
        else:
            target.set_weights(layer.get_weights())


def _refold(layer, pairs: dict[str, str]):
    if layer.name in pairs.values():
        return FoldedBatchNorm(name=layer.name, dtype=layer.dtype_policy.name)
    config = layer.get_config()
    if layer.name in pairs:
        config["use_bias"] = True
        config["bias_initializer"] = "zeros"
    return layer.__class__.from_config(config)


def fold_batch_norms(model, refresh: bool = False):
    """``model`` with each foldable ``conv -> BatchNorm`` pair (:func:`foldable`) made one
    convolution with a bias: a clone, made once per model; ``refresh`` folds the model's
    current weights into it again (a model that trains on between calls). The model itself
    when nothing folds, and objects that are not Keras functional models (test doubles) as
    they are."""
    return rewritten(model, _FOLDED, refresh, foldable, _refold, _copy_weights)


def for_prediction(model, precision: str, refresh: bool = False):
    """``model`` ready to predict: BatchNorms folded (:func:`fold_batch_norms`), each x2
    upsampling and the convolution after it computed at low resolution
    (:func:`~nucleus_segmentation.model.upsampling.phase_upsampling`), then computing in
    ``precision`` (:func:`~nucleus_segmentation.model.precision.with_precision`); the one
    preparation every segmentation path applies, in this process or in a worker."""
    prepared = phase_upsampling(fold_batch_norms(model, refresh), refresh)
    return with_precision(prepared, precision, refresh)
