"""The attention U-Net of the paper (and its baseline and ablations) as a Keras 3 functional model.

``build_attention_unet(UNetConfig(...))`` builds one fully convolutional network with input
``(None, None, C)``: a model built once predicts on any image whose height and width are
multiples of ``config.output_stride`` (16 by default), the smallest being 16 x 16.

Layout (paper 2.1-2.3, Fig. 5), with ``f_i = base_filters * 2**i``:

- input: ``(B, H, W, 1)`` float gray image in [0, 1] (``input_channels``: 3 for colour),
  local response normalization;
- encoder: ``depth`` stages of ``encoder_convs`` x (3x3 conv, BatchNorm, ReLU) with ``f_i``
  filters, each followed by a stride-2 max-pool (the stage output is the skip feature);
- dilated stages at 1/2**depth: the same convolutions with dilation ``dilation_rate`` and a
  3x3 max-pool with stride 1 instead of 2, so the deepest map stays at 1/16 of the input;
- bottleneck: ASPP (rates 1, 6, 12, 18; ``aspp_filters`` channels);
- decoder, on every level: x2 upsampling and a 3x3 conv (the high-level features),
  channel attention ``delta' + delta''`` where they meet the skip (low-level) features,
  concatenation ``[skip, weighted high]``, ``decoder_convs`` x (3x3 conv, BatchNorm, ReLU);
- head: 1x1 conv to ``num_classes`` and softmax: ``(B, H, W, num_classes)`` float32.

The paper's ASPP is followed by a DeepLabv3+-style decoder (x4 upsampling added to one
low-level feature); this project keeps the U-Net decoder with concatenated skips on all
levels instead, as the issue asks, and uses ASPP only as the bottleneck.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import layers

from nucleus_segmentation.errors import ParameterError, refuse_unknown_keys
from nucleus_segmentation.model.layers import (
    ASPP,
    AttentionFusion,
    BatchNormalization,
    LocalResponseNormalization,
)

ATTENTIONS = ("sap", "gap", "none")


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of ``build_attention_unet``; the defaults are a CPU-sized paper model.

    Attributes:
        base_filters: filters of the first stage, doubled at every stride-2 level (paper-ish 64).
        depth: stride-2 downsampling steps before the dilated stages; the output stride, and
            the multiple that input sides must be, is ``2**depth`` (16 by default).
        dilated_stages: encoder stages at the deepest resolution with dilated convolutions.
        encoder_convs: 3x3 convolutions per encoder stage (paper: 3).
        decoder_convs: 3x3 convolutions per decoder stage after the concatenation.
        dilation_rate: dilation of the deep stages' convolutions (paper: 2).
        attention: high-level attention ``delta'``: ``"sap"`` (paper), ``"gap"`` (plain
            squeeze-excitation) or ``"none"``.
        channel_expansion: add the low-level attention ``delta''`` (CE).
        sap_grid: (m, n) sub-regions of SAP (paper 4 x 4, at most 7 x 7).
        aspp: use ASPP as the bottleneck.
        aspp_rates: ASPP dilation rates (paper 1, 6, 12, 18).
        aspp_filters: ASPP channels; ``None`` means ``base_filters * 2**(depth - 1)``, which is
            the paper's 512 for ``base_filters=64``.
        lrn: local response normalization of the input.
        num_classes: output classes (2: background, nucleus).
        input_channels: channels of the input image (1: gray).
    """

    base_filters: int = 16
    depth: int = 4
    dilated_stages: int = 1
    encoder_convs: int = 3
    decoder_convs: int = 2
    dilation_rate: int = 2
    attention: str = "sap"
    channel_expansion: bool = True
    sap_grid: tuple[int, int] = (4, 4)
    aspp: bool = True
    aspp_rates: tuple[int, ...] = (1, 6, 12, 18)
    aspp_filters: int | None = None
    lrn: bool = True
    num_classes: int = 2
    input_channels: int = 1

    def __post_init__(self):
        # YAML gives lists (and may give one int for the grid): store tuples so the config
        # stays hashable and compares equal however it was written.
        grid = self.sap_grid
        grid = (grid, grid) if isinstance(grid, int) else tuple(grid)
        object.__setattr__(self, "sap_grid", grid)
        object.__setattr__(self, "aspp_rates", tuple(self.aspp_rates))
        positive = {
            "base_filters": self.base_filters,
            "depth": self.depth,
            "dilated_stages": self.dilated_stages,
            "encoder_convs": self.encoder_convs,
            "decoder_convs": self.decoder_convs,
            "dilation_rate": self.dilation_rate,
            "input_channels": self.input_channels,
        }
        for key, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ParameterError(f"{key} must be a positive integer, got {value!r}")
        if self.attention not in ATTENTIONS:
            raise ParameterError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        for key in ("channel_expansion", "aspp", "lrn"):
            if not isinstance(getattr(self, key), bool):
                raise ParameterError(f"{key} must be true or false, got {getattr(self, key)!r}")
        if len(grid) != 2 or not all(isinstance(v, int) and 1 <= v <= 7 for v in grid):
            raise ParameterError(f"sap_grid must be two integers in 1..7, got {self.sap_grid!r}")
        if not self.aspp_rates or not all(isinstance(r, int) and r >= 1 for r in self.aspp_rates):
            raise ParameterError(f"aspp_rates must be positive integers, got {self.aspp_rates!r}")
        if self.aspp_filters is not None and (
            not isinstance(self.aspp_filters, int) or self.aspp_filters < 1
        ):
            raise ParameterError(
                f"aspp_filters must be a positive integer, got {self.aspp_filters!r}"
            )
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ParameterError(f"num_classes must be an integer >= 2, got {self.num_classes!r}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> UNetConfig:
        """Config from a parameters dict (``params:model``); unknown keys raise ParameterError."""
        params = dict(params or {})
        refuse_unknown_keys(params, [f.name for f in dataclasses.fields(cls)], "params:model")
        return cls(**params)

    def to_params(self) -> dict[str, Any]:
        """Plain dict (lists for tuples) for logging; ``from_params`` reads it back."""
        params = dataclasses.asdict(self)
        params["sap_grid"] = list(self.sap_grid)
        params["aspp_rates"] = list(self.aspp_rates)
        return params

    @property
    def output_stride(self) -> int:
        """Input size / deepest feature map size; input sides must be multiples of it."""
        return 2**self.depth

    @property
    def min_input_size(self) -> int:
        """Smallest input side (the deepest map is then 1 x 1)."""
        return self.output_stride

    @property
    def resolved_aspp_filters(self) -> int:
        if self.aspp_filters is not None:
            return self.aspp_filters
        return self.base_filters * 2 ** (self.depth - 1)

    @property
    def uses_attention(self) -> bool:
        return self.attention != "none" or self.channel_expansion


def _as_config(config: UNetConfig | Mapping[str, Any] | None) -> UNetConfig:
    if isinstance(config, UNetConfig):
        return config
    return UNetConfig.from_params(config)


def _conv_block(x, filters: int, convs: int, dilation: int, name: str):
    """``convs`` x (3x3 conv, BatchNorm, ReLU); the conv has no bias since BatchNorm has one."""
    for index in range(1, convs + 1):
        x = layers.Conv2D(
            filters,
            3,
            padding="same",
            dilation_rate=dilation,
            use_bias=False,
            kernel_initializer="he_normal",
            name=f"{name}_conv{index}",
        )(x)
        x = BatchNormalization(name=f"{name}_norm{index}")(x)
        x = layers.ReLU(name=f"{name}_relu{index}")(x)
    return x


def build_attention_unet(
    config: UNetConfig | Mapping[str, Any] | None = None, name: str | None = None
) -> keras.Model:
    """Build the (attention) U-Net described by ``config``.

    Args:
        config: a ``UNetConfig``, a parameters dict for ``UNetConfig.from_params`` or None
            for the defaults.
        name: model name; default ``"attention_unet"``, or ``"unet"`` for the plain baseline.

    Returns:
        An uncompiled ``keras.Model`` mapping ``(B, H, W, input_channels)`` float images in
        [0, 1] to ``(B, H, W, num_classes)`` float32 class probabilities (softmax, summing to
        1 per pixel). ``H`` and ``W`` must be multiples of ``config.output_stride`` (16).
    """
    config = _as_config(config)
    base = config.base_filters
    inputs = keras.Input((None, None, config.input_channels), name="image")
    x = LocalResponseNormalization(name="lrn")(inputs) if config.lrn else inputs

    # Encoder: stride-2 stages whose outputs are the skip features.
    skips = []
    for level in range(config.depth):
        x = _conv_block(x, base * 2**level, config.encoder_convs, 1, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)

    # Dilated stages: stride-1 pooling keeps 1/16 resolution, dilation keeps the receptive
    # field growing as a further stride-2 stage would.
    deep_filters = base * 2**config.depth
    for stage in range(config.dilated_stages):
        x = _conv_block(
            x, deep_filters, config.encoder_convs, config.dilation_rate, f"dilated{stage}"
        )
        x = layers.MaxPooling2D(3, strides=1, padding="same", name=f"dilated{stage}_pool")(x)

    # Bottleneck: multi-scale context at 1/16.
    if config.aspp:
        x = ASPP(config.resolved_aspp_filters, config.aspp_rates, name="aspp")(x)

    # Decoder: upsample, weight the high-level features by attention, concatenate the skip.
    for level in reversed(range(config.depth)):
        filters = base * 2**level
        # Nearest-neighbour upsampling (a repeat) then a 3x3 conv: Keras' bilinear resize
        # cannot take a size that is only known at run time under tf.function.
        high = layers.UpSampling2D(2, interpolation="nearest", name=f"dec{level}_up")(x)
        high = _conv_block(high, filters, 1, 1, f"dec{level}_up")
        low = skips[level]
        if config.uses_attention:
            high = AttentionFusion(
                high_channels=filters,
                low_channels=filters,
                attention=config.attention,
                channel_expansion=config.channel_expansion,
                grid=config.sap_grid,
                name=f"dec{level}_attention",
            )([high, low])
        x = layers.Concatenate(name=f"dec{level}_concat")([low, high])
        x = _conv_block(x, filters, config.decoder_convs, 1, f"dec{level}")

    # Head: per-pixel class probabilities, float32 even under mixed precision.
    logits = layers.Conv2D(config.num_classes, 1, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    if name is None:
        name = "attention_unet" if config.uses_attention or config.aspp else "unet"
    return keras.Model(inputs, outputs, name=name)


def model_summary_stats(
    config: UNetConfig | Mapping[str, Any] | None = None, size: int = 512
) -> dict[str, int]:
    """Parameter counts of the model for ``config`` and its feature map sizes at ``size``.

    Builds the model (weights are allocated, nothing is run). ``size`` is the side of a
    square input and must be a multiple of the output stride.

    Returns:
        ``params``, ``trainable_params``, ``non_trainable_params`` (BatchNorm statistics),
        ``input_size``, ``output_stride`` and ``bottleneck_size`` (side of the deepest map).
    """
    config = _as_config(config)
    if size < config.min_input_size or size % config.output_stride:
        raise ValueError(f"size must be a positive multiple of {config.output_stride}, got {size}")
    model = build_attention_unet(config)
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    params = int(model.count_params())
    return {
        "params": params,
        "trainable_params": trainable,
        "non_trainable_params": params - trainable,
        "input_size": int(size),
        "output_stride": config.output_stride,
        "bottleneck_size": int(size) // config.output_stride,
    }
