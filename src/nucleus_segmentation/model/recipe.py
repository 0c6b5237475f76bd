"""The network the ``training`` parameters describe, built and compiled one way for the
training node and for the benchmarks that time or count it.

Pure configuration: no Kedro, no data. ``params`` is the ``training`` parameter group
(``conf/base/parameters_training.yml``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras

from nucleus_segmentation.imaging.targets import num_classes
from nucleus_segmentation.model.losses import PixelWeightedCrossEntropy
from nucleus_segmentation.model.training import make_optimizer, schedule_name
from nucleus_segmentation.model.unet import UNetConfig, build_attention_unet

CLASS_NAMES = ("background", "nucleus", "boundary")  # class ids 0, 1, 2 (boundary models)


def target_settings(params: Mapping[str, Any]) -> tuple[str, int]:
    """(kind, boundary width) of ``params["targets"]``, the kind checked; binary when absent."""
    targets = dict(params.get("targets") or {"kind": "binary"})
    kind, width = str(targets.get("kind", "binary")), int(targets.get("boundary_width", 2))
    num_classes(kind)
    return kind, width


def class_names(params: Mapping[str, Any]) -> tuple[str, ...]:
    """Names of the network's output classes, in class-id order (3 with the boundary class)."""
    return CLASS_NAMES[: num_classes(target_settings(params)[0])]


def training_model_config(params: Mapping[str, Any]) -> UNetConfig:
    """``params["model"]`` with one output per class of ``params["targets"]``: the network
    training builds, so a benchmark of "the default" counts and times that same network."""
    return UNetConfig.from_params({**params["model"], "num_classes": len(class_names(params))})


def fits_budget(params: Mapping[str, Any]) -> bool:
    """Whether the poly decay is fitted to the time budget (:class:`FittedPolyDecay`): a poly
    schedule, a budget and ``fit_schedule_to_budget``; otherwise Keras' ``PolynomialDecay``
    over all epochs."""
    return (
        params["max_minutes"] is not None
        and bool(params.get("fit_schedule_to_budget", False))
        and schedule_name(params["optimizer"]) == "poly"
    )


def compile_training_model(
    config: UNetConfig,
    params: Mapping[str, Any],
    class_weights: Sequence[float],
    total_steps: int,
) -> keras.Model:
    """A fresh network of ``config`` compiled with training's optimizer (schedule over
    ``total_steps``), class-weighted cross-entropy plus ``dice_weight`` soft Dice, and
    ``jit_compile`` setting."""
    model = build_attention_unet(config)
    model.compile(
        optimizer=make_optimizer(params["optimizer"], total_steps, fitted=fits_budget(params)),
        loss=PixelWeightedCrossEntropy(
            list(class_weights), dice_weight=float(params["dice_weight"])
        ),
        jit_compile=bool(params["jit_compile"]),
    )
    return model
