"""Custom Keras 3 layers of the attention U-Net: LRN, adaptive pooling, SAP, CE, ASPP, and
the BatchNorm every block uses (Keras' own, with a cheaper gradient in training).

Every layer works on channels-last float tensors ``(batch, height, width, channels)`` whose
height and width may be unknown until run time, uses ``keras.ops`` only (so it runs on the
TensorFlow, JAX and PyTorch backends) and is registered for ``.keras`` saving, so a saved
model loads back with ``keras.saving.load_model(path, safe_mode=True)``.

Notation as in the paper: ``delta'`` is the high-level attention from subregional average
pooling (SAP), ``delta''`` the low-level attention after channel expansion (CE); the
high-level features are multiplied by ``delta' + delta''``, which lies in (0, 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

PACKAGE = "nucleus_segmentation"

ATTENTION_POOLINGS = ("sap", "gap")


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """``4 -> (4, 4)``; ``[4, 3] -> (4, 3)``; raises ValueError for anything else."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _channels(input_shape: Sequence[int | None], layer: str) -> int:
    channels = input_shape[-1]
    if channels is None:
        raise ValueError(f"{layer} needs a known channel count, got input shape {input_shape}")
    return int(channels)


def _bin_matrix(length, bins: int, dtype: str):
    """``(bins, length)`` averaging matrix: row ``i`` averages positions ``[start_i, end_i)``.

    Bin edges follow PyTorch's adaptive pooling, ``start = floor(i * L / bins)`` and
    ``end = ceil((i + 1) * L / bins)``: bins tile the axis exactly when ``bins`` divides
    ``L``, overlap by one position otherwise, and repeat positions when ``L < bins``, so any
    ``L >= 1`` works. ``length`` may be a Python int or a scalar tensor (unknown at trace time).
    """
    index = ops.arange(bins, dtype="int32")
    start = (index * length) // bins
    end = ((index + 1) * length + bins - 1) // bins
    position = ops.arange(length, dtype="int32")
    inside = ops.logical_and(
        ops.greater_equal(position[None, :], start[:, None]),
        ops.less(position[None, :], end[:, None]),
    )
    inside = ops.cast(inside, dtype)
    return inside / ops.sum(inside, axis=1, keepdims=True)


def _normalize_with_batch_moments(inputs, mean, variance, gamma, beta, epsilon: float, axes):
    """BatchNorm's training-time output ``(x - mean) / sqrt(variance + epsilon) * gamma + beta``
    with its gradient written out instead of traced through the moments.

    ``mean`` and ``variance`` are the batch moments of ``inputs`` over ``axes``, passed in
    without a gradient: the closed form below already holds their dependence on ``inputs``,
    ``dx = gamma / sqrt(variance + epsilon) * (dy - mean(dy) - x_hat * mean(dy * x_hat))``,
    two reductions and one elementwise expression where Keras traces the gradient through
    each of its moment and normalisation ops (docs/benchmarks.md, "BatchNorm's gradient in
    closed form").
    """

    @ops.custom_gradient
    def normalize(x, mean, variance, gamma, beta):
        inverse_std = ops.rsqrt(variance + epsilon)
        scale = gamma * inverse_std
        outputs = x * scale + (beta - mean * scale)

        def gradient(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            count = ops.cast(ops.size(x), x.dtype) / ops.cast(ops.size(mean), x.dtype)
            normalized = (x - mean) * inverse_std
            d_beta = ops.sum(upstream, axis=axes)
            d_gamma = ops.sum(upstream * normalized, axis=axes)
            d_x = scale * (upstream - (d_beta + normalized * d_gamma) / count)
            return d_x, ops.zeros_like(mean), ops.zeros_like(variance), d_gamma, d_beta

        return outputs, gradient

    return normalize(inputs, ops.stop_gradient(mean), ops.stop_gradient(variance), gamma, beta)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchNormalization(layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` (same arguments, weights, outputs and moving
    statistics) whose training-time gradient is computed in closed form.

    Keras traces the gradient through its moment and normalisation ops, many passes over
    every feature map; on a 2-core CPU that made BatchNorm a quarter of the U-Net's training
    step. Here training with the batch moments over all axes but the last (no mask, no
    renormalisation, scale and offset on) takes :func:`_normalize_with_batch_moments`; every
    other case, and inference, is Keras' own code. Subclassing keeps every ``isinstance``
    check (BatchNorm folding, layer tables); the class keeps Keras' name because a ``.keras``
    file stores the weights of layers held in a list (ASPP's branches) under their class
    name: so models saved with either class load into the other.
    """

    def _closed_form(self, inputs, training, mask) -> bool:
        return bool(
            training
            and self.trainable
            and mask is None
            and not self.renorm
            and self.scale
            and self.center
            and self.axis in (-1, len(inputs.shape) - 1)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._closed_form(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        inputs = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        mean, variance = self._moments(inputs, None)
        self.moving_mean.assign(
            ops.cast(self.moving_mean, inputs.dtype) * self.momentum + mean * (1.0 - self.momentum)
        )
        self.moving_variance.assign(
            ops.cast(self.moving_variance, inputs.dtype) * self.momentum
            + variance * (1.0 - self.momentum)
        )
        outputs = _normalize_with_batch_moments(
            inputs,
            mean,
            variance,
            ops.cast(self.gamma, inputs.dtype),
            ops.cast(self.beta, inputs.dtype),
            self.epsilon,
            self._reduction_axes,
        )
        return ops.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class LocalResponseNormalization(layers.Layer):
    """Local response normalization: ``x / (bias + alpha * mean(x^2 over a window))^beta``.

    The paper normalizes the network input with LRN but gives no constants. With a 1-channel
    gray input, cross-channel LRN (TensorFlow's ``tf.nn.local_response_normalization``)
    degenerates to a fixed pointwise squashing of each pixel; the default
    ``mode="within_channel"`` (Caffe's WITHIN_CHANNEL) instead averages the squares over a
    ``(2 radius + 1)^2`` spatial window, which is a local contrast normalization. As in Caffe
    the window sum is divided by the window size, so ``alpha`` does not depend on ``radius``;
    the window is zero-padded (at the image border, and beyond the first and last channel),
    so one gray channel across channels gives ``x / (bias + alpha x^2 / (2 radius + 1))^beta``.

    Args:
        radius: half-size of the window (spatial for ``within_channel``, channels otherwise).
        bias, alpha, beta: constants of the formula above; the defaults are TensorFlow's.
        mode: ``"within_channel"`` or ``"across_channels"``.

    Input and output: ``(B, H, W, C)`` float; for inputs in [0, 1] and the defaults, outputs
    stay in [0, 1]. No weights.
    """

    def __init__(
        self,
        radius: int = 2,
        bias: float = 1.0,
        alpha: float = 1.0,
        beta: float = 0.5,
        mode: str = "within_channel",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mode not in ("within_channel", "across_channels"):
            raise ValueError(f"mode must be within_channel or across_channels, got {mode!r}")
        if radius < 0 or bias <= 0 or alpha < 0 or beta < 0:
            raise ValueError("LRN needs radius >= 0, bias > 0, alpha >= 0 and beta >= 0")
        self.radius = int(radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.mode = mode

    def call(self, inputs, training=None):
        squares = ops.square(inputs)
        size = 2 * self.radius + 1
        if self.mode == "within_channel":
            padded = ops.pad(
                squares, [[0, 0], [self.radius, self.radius], [self.radius, self.radius], [0, 0]]
            )
            local_mean = ops.average_pool(padded, pool_size=size, strides=1, padding="valid")
        else:
            # Average over neighbouring channels as a 1-D pooling along the channel axis.
            padded = ops.pad(squares, [[0, 0], [0, 0], [0, 0], [self.radius, self.radius]])
            height, width = ops.shape(inputs)[1], ops.shape(inputs)[2]
            channels = ops.shape(padded)[3]
            rows = ops.reshape(padded, (-1, channels, 1))
            pooled = ops.average_pool(rows, pool_size=size, strides=1, padding="valid")
            local_mean = ops.reshape(pooled, (-1, height, width, ops.shape(inputs)[3]))
        return inputs / ops.power(self.bias + self.alpha * local_mean, self.beta)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            radius=self.radius, bias=self.bias, alpha=self.alpha, beta=self.beta, mode=self.mode
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class AdaptiveAveragePooling2D(layers.Layer):
    """Average each channel over an ``m x n`` grid of sub-regions, whatever the input size.

    Implemented as two small matrix products with averaging matrices computed from the
    run-time height and width (see ``_bin_matrix``), so it works inside a model whose input
    is ``(None, None, C)`` and needs no backend-specific op. Inputs smaller than the grid
    (for example the 1/16 map of a 32 x 32 image, 2 x 2, pooled to 4 x 4) repeat pixels.

    Input ``(B, H, W, C)`` float, any ``H, W >= 1``; output ``(B, m, n, C)``. No weights.
    """

    def __init__(self, output_size: int | Sequence[int] = (4, 4), **kwargs):
        super().__init__(**kwargs)
        self.output_size = _pair(output_size, "output_size")

    def call(self, inputs, training=None):
        shape = ops.shape(inputs)
        rows = _bin_matrix(shape[1], self.output_size[0], self.compute_dtype)
        cols = _bin_matrix(shape[2], self.output_size[1], self.compute_dtype)
        pooled = ops.einsum("ih,bhwc->biwc", rows, inputs)
        return ops.einsum("jw,biwc->bijc", cols, pooled)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(output_size=list(self.output_size))
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelAttention(layers.Layer):
    """High-level channel attention ``delta'``: a squeeze-excitation block, pooled two ways.

    ``pooling="sap"`` (the paper's subregional average pooling): adaptive average pooling of
    each channel to ``grid`` (m x n), a per-channel m x n convolution (depthwise, valid) down
    to 1 x 1, BatchNorm, ReLU, 1 x 1 convolution C -> C, sigmoid. ``pooling="gap"`` (the
    plain squeeze-excitation baseline): global average pooling in place of the first two
    steps, the rest identical, so the ablation isolates the pooling.

    The BatchNorm sees one value per image and channel: train with batches of several images
    (the paper used 16); with batch size 1 it outputs its offset and the attention is constant.

    Args:
        channels: C, the channel count of the features the attention is computed from.
        pooling: ``"sap"`` or ``"gap"``.
        grid: (m, n) for SAP; the paper uses 4 x 4 and advises at most 7 x 7.

    Input ``(B, H, W, C)`` float; output ``(B, 1, 1, C)`` in (0, 1).
    """

    def __init__(
        self,
        channels: int,
        pooling: str = "sap",
        grid: int | Sequence[int] = (4, 4),
        **kwargs,
    ):
        super().__init__(**kwargs)
        if pooling not in ATTENTION_POOLINGS:
            raise ValueError(f"pooling must be one of {ATTENTION_POOLINGS}, got {pooling!r}")
        self.channels = int(channels)
        self.pooling = pooling
        self.grid = _pair(grid, "grid")
        if pooling == "sap":
            self.pool = AdaptiveAveragePooling2D(
                self.grid, name="subregions", dtype=self.dtype_policy
            )
            self.reduce = layers.DepthwiseConv2D(
                self.grid,
                padding="valid",
                use_bias=False,
                name="subregion_weights",
                dtype=self.dtype_policy,
            )
        else:
            self.pool = layers.GlobalAveragePooling2D(
                keepdims=True, name="global_pool", dtype=self.dtype_policy
            )
            self.reduce = None
        self.norm = BatchNormalization(name="norm", dtype=self.dtype_policy)
        self.excite = layers.Conv2D(self.channels, 1, name="excite", dtype=self.dtype_policy)

    def build(self, input_shape):
        channels = _channels(input_shape, self.name)
        if channels != self.channels:
            raise ValueError(f"{self.name} built for {self.channels} channels, got {channels}")
        vector_shape = (input_shape[0], 1, 1, channels)
        self.pool.build(input_shape)
        if self.reduce is not None:
            self.reduce.build((input_shape[0], *self.grid, channels))
        self.norm.build(vector_shape)
        self.excite.build(vector_shape)

    def call(self, inputs, training=None):
        x = self.pool(inputs)
        if self.reduce is not None:
            x = self.reduce(x)
        x = ops.relu(self.norm(x, training=training))
        return ops.sigmoid(self.excite(x))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, 1, self.channels)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, pooling=self.pooling, grid=list(self.grid))
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelExpansion(layers.Layer):
    """Low-level attention expanded to the high-level channel count: ``delta''`` (CE).

    The low-level features get their own attention vector (global average pooling, 1 x 1
    convolution C_low -> C_low, sigmoid); a second 1 x 1 convolution expands it to C_high
    channels and a sigmoid maps it to (0, 1). This lets the spatially precise skip features
    vote on which decoder channels to keep.

    Args:
        low_channels: C_low of the skip features.
        high_channels: C_high of the features the result will weight.

    Input ``(B, H, W, C_low)`` float; output ``(B, 1, 1, C_high)`` in (0, 1).
    """

    def __init__(self, low_channels: int, high_channels: int, **kwargs):
        super().__init__(**kwargs)
        self.low_channels = int(low_channels)
        self.high_channels = int(high_channels)
        self.pool = layers.GlobalAveragePooling2D(
            keepdims=True, name="global_pool", dtype=self.dtype_policy
        )
        self.low_attention = layers.Conv2D(
            self.low_channels, 1, name="low_attention", dtype=self.dtype_policy
        )
        self.expand = layers.Conv2D(self.high_channels, 1, name="expand", dtype=self.dtype_policy)

    def build(self, input_shape):
        channels = _channels(input_shape, self.name)
        if channels != self.low_channels:
            raise ValueError(f"{self.name} built for {self.low_channels} channels, got {channels}")
        self.pool.build(input_shape)
        self.low_attention.build((input_shape[0], 1, 1, channels))
        self.expand.build((input_shape[0], 1, 1, channels))

    def call(self, inputs, training=None):
        attention = ops.sigmoid(self.low_attention(self.pool(inputs)))
        return ops.sigmoid(self.expand(attention))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, 1, self.high_channels)

    def get_config(self):
        config = super().get_config()
        config.update(low_channels=self.low_channels, high_channels=self.high_channels)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class AttentionFusion(layers.Layer):
    """Weight high-level features where they meet low-level (skip) features.

    ``weight = delta' + delta''`` with ``delta'`` from ``ChannelAttention`` on the high-level
    features and ``delta''`` from ``ChannelExpansion`` on the low-level ones. The weight lies
    in (0, 2) rather than (0, 1) so attention can amplify a channel as well as suppress it.
    An ablation that switches one term off keeps the other alone (``attention="none"`` gives
    ``delta''``, ``channel_expansion=False`` the plain ``delta'`` of squeeze-excitation).

    Args:
        high_channels: C_high of the high-level (decoder) features.
        low_channels: C_low of the low-level (skip) features.
        attention: ``"sap"``, ``"gap"`` or ``"none"`` (no ``delta'``).
        channel_expansion: whether ``delta''`` is added.
        grid: (m, n) of SAP.

    Input ``[high (B, H, W, C_high), low (B, H, W, C_low)]`` float; output like ``high``.
    """

    def __init__(
        self,
        high_channels: int,
        low_channels: int,
        attention: str = "sap",
        channel_expansion: bool = True,
        grid: int | Sequence[int] = (4, 4),
        **kwargs,
    ):
        super().__init__(**kwargs)
        if attention not in (*ATTENTION_POOLINGS, "none"):
            raise ValueError(f"attention must be sap, gap or none, got {attention!r}")
        if attention == "none" and not channel_expansion:
            raise ValueError("AttentionFusion without attention and channel expansion is a no-op")
        self.high_channels = int(high_channels)
        self.low_channels = int(low_channels)
        self.attention = attention
        self.channel_expansion = bool(channel_expansion)
        self.grid = _pair(grid, "grid")
        self.high_attention = (
            None
            if attention == "none"
            else ChannelAttention(
                self.high_channels,
                attention,
                self.grid,
                name="high_attention",
                dtype=self.dtype_policy,
            )
        )
        self.expansion = (
            ChannelExpansion(
                self.low_channels,
                self.high_channels,
                name="channel_expansion",
                dtype=self.dtype_policy,
            )
            if self.channel_expansion
            else None
        )

    def build(self, input_shape):
        high_shape, low_shape = input_shape
        if self.high_attention is not None:
            self.high_attention.build(high_shape)
        if self.expansion is not None:
            self.expansion.build(low_shape)

    def attention_weight(self, inputs, training=None):
        """The weight ``delta' + delta''``, ``(B, 1, 1, C_high)`` in (0, 2) (or (0, 1) alone)."""
        high, low = inputs
        terms = []
        if self.high_attention is not None:
            terms.append(self.high_attention(high, training=training))
        if self.expansion is not None:
            terms.append(self.expansion(low, training=training))
        return terms[0] if len(terms) == 1 else terms[0] + terms[1]

    def call(self, inputs, training=None):
        return inputs[0] * self.attention_weight(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(
            high_channels=self.high_channels,
            low_channels=self.low_channels,
            attention=self.attention,
            channel_expansion=self.channel_expansion,
            grid=list(self.grid),
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ASPP(layers.Layer):
    """Atrous spatial pyramid pooling: parallel dilated 3 x 3 convolutions, fused by 1 x 1.

    One branch per rate (3 x 3 convolution with that dilation, BatchNorm, ReLU, ``filters``
    channels each; the paper uses 3 x 3 even for rate 1), concatenated and projected back to
    ``filters`` channels by a 1 x 1 convolution, BatchNorm and ReLU. "same" padding keeps
    the size; on small maps the large rates mostly read zero padding, which is harmless.

    Args:
        filters: output channels of every branch and of the projection (paper: 512).
        rates: dilation rates, paper (1, 6, 12, 18).

    Input ``(B, H, W, C)`` float; output ``(B, H, W, filters)`` float, >= 0.
    """

    def __init__(self, filters: int = 512, rates: Sequence[int] = (1, 6, 12, 18), **kwargs):
        super().__init__(**kwargs)
        rates = tuple(int(r) for r in rates)
        if not rates or min(rates) < 1:
            raise ValueError(f"ASPP needs at least one rate >= 1, got {rates!r}")
        self.filters = int(filters)
        self.rates = rates
        self.branches = [
            layers.Conv2D(
                self.filters,
                3,
                padding="same",
                dilation_rate=rate,
                use_bias=False,
                kernel_initializer="he_normal",
                name=f"rate{rate}",
                dtype=self.dtype_policy,
            )
            for rate in rates
        ]
        self.branch_norms = [
            BatchNormalization(name=f"rate{rate}_norm", dtype=self.dtype_policy) for rate in rates
        ]
        self.project = layers.Conv2D(
            self.filters,
            1,
            use_bias=False,
            kernel_initializer="he_normal",
            name="project",
            dtype=self.dtype_policy,
        )
        self.project_norm = BatchNormalization(name="project_norm", dtype=self.dtype_policy)

    def build(self, input_shape):
        _channels(input_shape, self.name)
        branch_shape = (*input_shape[:-1], self.filters)
        for conv, norm in zip(self.branches, self.branch_norms, strict=True):
            conv.build(input_shape)
            norm.build(branch_shape)
        self.project.build((*input_shape[:-1], self.filters * len(self.rates)))
        self.project_norm.build(branch_shape)

    def call(self, inputs, training=None):
        branches = [
            ops.relu(norm(conv(inputs), training=training))
            for conv, norm in zip(self.branches, self.branch_norms, strict=True)
        ]
        fused = self.project(ops.concatenate(branches, axis=-1))
        return ops.relu(self.project_norm(fused, training=training))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, rates=list(self.rates))
        return config
