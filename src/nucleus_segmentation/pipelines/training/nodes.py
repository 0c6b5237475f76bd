"""Nodes of the ``training`` pipeline."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import keras
import matplotlib.figure
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from nucleus_segmentation import bundle
from nucleus_segmentation.errors import DataProblem, ParameterError
from nucleus_segmentation.imaging.augment import AugmentConfig, StainJitter
from nucleus_segmentation.imaging.preprocess import (
    effective_preprocessing,
    network_channels,
    stain_representation,
)
from nucleus_segmentation.imaging.targets import check_contact, class_targets, contact_weights
from nucleus_segmentation.model.distribution import device_report, distribution_scope
from nucleus_segmentation.model.losses import median_frequency_class_weights
from nucleus_segmentation.model.precision import precision_scope
from nucleus_segmentation.model.recipe import (
    class_names,
    compile_training_model,
    fits_budget,
    target_settings,
    training_model_config,
)
from nucleus_segmentation.model.training import (
    OnlineAugmentedBatches,
    SegmentationBatches,
    ValidationMetrics,
    fit_with_checkpoints,
    schedule_name,
)
from nucleus_segmentation.segment import SegmentationSettings

logger = logging.getLogger(__name__)


def _ids(split: pd.DataFrame, name: str) -> list[str]:
    return split.loc[split["split"] == name, "image_id"].tolist()


def _contact(params: Mapping[str, Any]) -> tuple[float, float] | None:
    """(weight, sigma) of the contact loss weights (``targets.contact_weight``,
    ``targets.contact_sigma``), checked; None when the weight is 0 or absent."""
    targets = dict(params.get("targets") or {})
    weight, sigma = targets.get("contact_weight", 0.0), targets.get("contact_sigma", 3.0)
    check_contact(weight, sigma)
    return None if weight == 0 else (float(weight), float(sigma))


def compute_class_weights(
    preprocessed: Mapping[str, np.ndarray], split: pd.DataFrame, params: Mapping[str, Any]
) -> dict[str, float]:
    """Median-frequency-balanced class weights from the *training* masks (never validation
    or test), raised to ``params["class_weight_power"]``: 1 is the paper's weighting, 0 an
    unweighted loss, values between temper it. Returns ``{"background": w0, "nucleus": w1}``
    (and ``"boundary": w2`` with ``targets.kind: boundary``, nucleus then being the interior)."""
    kind, width = target_settings(params)
    names = class_names(params)
    masks = [
        class_targets(bundle.field(preprocessed, image_id, "labels"), kind, width)
        for image_id in _ids(split, "train")
    ]
    weights = median_frequency_class_weights(masks, num_classes=len(names))
    weights = np.where(weights > 0, weights, 1.0) ** float(params["class_weight_power"])
    result = {name: float(w) for name, w in zip(names, weights, strict=True)}
    logger.info("Class weights (median frequency balancing): %s", result)
    return result


def describe_training_data(
    augmented: Mapping[str, np.ndarray],
    split: pd.DataFrame,
    params: Mapping[str, Any],
    augmentation_params: Mapping[str, Any],
) -> dict[str, dict]:
    """How much data the run learns and validates from, as MLflow metrics (``data.<name>``),
    so runs on the sample and on the full set are told apart in the MLflow UI: images per
    split and the training samples an epoch passes over (the stored augmented copies when
    ``augmentation_mode`` is ``offline``; as many crops drawn afresh when ``online``)."""
    counts = {f"{name}_images": len(_ids(split, name)) for name in ("train", "validation", "test")}
    if params["augmentation_mode"] == "offline":
        counts["train_samples"] = len(bundle.sample_ids(augmented))
    else:
        copies = int(augmentation_params["copies_per_image"])
        counts["train_samples"] = counts["train_images"] * copies
    return {name: {"value": float(value), "step": 0} for name, value in counts.items()}


def _training_batches(augmented, preprocessed, split, params, augmentation_params, steps):
    seed, batch = int(params["seed"]), int(params["batch_size"])
    mode = params["augmentation_mode"]
    kind, width = target_settings(params)
    contact = _contact(params)
    if mode == "offline":
        ids = bundle.sample_ids(augmented)
        images = np.stack([bundle.field(augmented, i, "image") for i in ids])
        masks = np.stack(
            [class_targets(bundle.field(augmented, i, "labels"), kind, width) for i in ids]
        )
        weights = None
        if contact is not None:  # float16 halves the memory; the weights are 1 to 1 + weight
            weights = np.stack(
                [contact_weights(bundle.field(augmented, i, "labels"), *contact) for i in ids]
            ).astype(np.float16)
        return SegmentationBatches(images, masks, batch, steps, seed, weights), len(ids)
    if mode == "online":
        stored_only = {  # setting: (whether it is on, how to turn it off)
            "stain_jitter": (
                StainJitter.from_params(augmentation_params.get("stain_jitter")).enabled,
                "stain_jitter.enabled to false",
            ),
            "copies_per_modality": (
                augmentation_params.get("copies_per_modality"),
                "copies_per_modality to {}",
            ),
            "adapt_nucleus_size": (
                augmentation_params.get("adapt_nucleus_size"),
                "adapt_nucleus_size to false",
            ),
        }
        for name, (on, off) in stored_only.items():
            if on:
                raise ParameterError(
                    f"augmentation.{name} works on the stored (offline) copies only: set "
                    f"training.augmentation_mode to offline or {off}"
                )
        ids = _ids(split, "train")
        config = AugmentConfig.from_params(dict(augmentation_params["transforms"]))
        images = [bundle.field(preprocessed, i, "image") for i in ids]
        labels = [bundle.field(preprocessed, i, "labels") for i in ids]
        feeder = OnlineAugmentedBatches(
            images,
            labels,
            ids,
            config,
            batch,
            steps,
            seed,
            targets=(kind, width),
            contact=contact,
            workers=int(params["online_workers"]),
        )
        return feeder, len(ids) * int(augmentation_params["copies_per_image"])
    raise ParameterError(f"unknown augmentation_mode {mode!r}: use 'offline' or 'online'")


def _check_channels(augmented, preprocessed, params, preprocessing_params) -> None:
    """Refuse stored training images whose channels differ from what the preprocessing
    settings make (gray or colour): they were prepared with other settings."""
    offline = params["augmentation_mode"] == "offline"
    stored, name = (augmented, "augmented") if offline else (preprocessed, "preprocessed")
    ids = bundle.sample_ids(stored)
    if not ids:
        return
    image = bundle.field(stored, ids[0], "image")
    have, want = (1 if image.ndim == 2 else image.shape[2]), network_channels(preprocessing_params)
    if have != want:
        raise DataProblem(
            f"{name}_images: the stored images have {have} channel(s), "
            f"preprocessing.stain.representation="
            f"{stain_representation(preprocessing_params)!r} "
            f"makes {want}: rerun `kedro run --pipeline data_processing` with this run's "
            "--env and --params"
        )


def _fingerprint(params, augmentation_params, preprocessing_params, split, samples) -> str:
    """What a checkpoint must match to be resumed: settings (the preprocessing's effective
    ones), split and training-set size. How long to train (epochs, time budget) may change:
    resuming can extend a run."""
    length = ("epochs", "max_minutes", "fit_schedule_to_budget", "resume")
    settings = {k: v for k, v in params.items() if k not in length}
    preprocessing = effective_preprocessing(preprocessing_params)
    text = json.dumps(
        [settings, augmentation_params, preprocessing, _ids(split, "train"), samples],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _poly_power(params: Mapping[str, Any]) -> float | None:
    """The poly schedule's power, or None for a constant rate."""
    if schedule_name(params["optimizer"]) != "poly":
        return None
    return float(params["optimizer"].get("poly_power", 0.99))


def train_segmentation_model(
    augmented: Mapping[str, np.ndarray],
    preprocessed: Mapping[str, np.ndarray],
    ingested: Mapping[str, np.ndarray],
    split: pd.DataFrame,
    class_weights: Mapping[str, float],
    params: Mapping[str, Any],
    augmentation_params: Mapping[str, Any],
    preprocessing_params: Mapping[str, Any],
    segmentation_params: Mapping[str, Any],
) -> tuple[keras.Model, pd.DataFrame, dict[str, list[dict]], dict[str, dict]]:
    """Train the U-Net configured by ``params["model"]``; keep the best validation epoch.

    Trains on the stored augmented set (``augmentation_mode: offline``) or on crops drawn on
    the fly from the preprocessed training images (``online``); validates every epoch on the
    whole *ingested* validation images through the segmentation path inference uses
    (``preprocessing_params``, ``segmentation_params``: scale policy, tiling, TTA and the
    default separation), against their own-grid labels; checkpoints every epoch to
    ``params["checkpoint_dir"]`` and, with ``resume: true``, continues an interrupted run
    with the same settings from there.

    Returns:
        ``(model, history, metric_history, best_metrics)``: the model with the weights of the
        best epoch by ``monitor``; one row per epoch; the same as MLflow metric histories
        (``{name: [{"value", "step"}]}``); and the best epoch's validation scores.
    """
    _check_channels(augmented, preprocessed, params, preprocessing_params)
    keras.utils.set_random_seed(int(params["seed"]))
    epochs = int(params["epochs"])
    steps = params["steps_per_epoch"]
    feeder, samples = _training_batches(
        augmented,
        preprocessed,
        split,
        params,
        augmentation_params,
        steps=1 if steps is None else int(steps),
    )
    if steps is None:  # one pass over the training samples per epoch
        feeder.steps = max(1, samples // int(params["batch_size"]))
    names = class_names(params)
    kind, width = target_settings(params)
    if set(class_weights) != set(names):
        raise ParameterError(
            f"class_weights are for the classes {sorted(class_weights)}, training.targets "
            f"{params.get('targets')} needs {list(names)}: rerun the compute_class_weights node"
        )
    if segmentation_params["separation"]["method"] == "interior" and kind != "boundary":
        raise ParameterError(
            "segmentation.separation.method 'interior' validates with interior seeds, which "
            "need training.targets.kind: boundary"
        )
    weights = [float(class_weights[name]) for name in names]
    config = dataclasses.replace(
        training_model_config(params), input_channels=network_channels(preprocessing_params)
    )
    validation_ids = _ids(split, "validation")[: params["max_validation_images"]]
    validation = ValidationMetrics(
        [bundle.field(ingested, i, "image") for i in validation_ids],
        [bundle.field(ingested, i, "labels") for i in validation_ids],
        weights,
        preprocessing_params,
        SegmentationSettings.from_params(segmentation_params),
        segmentation_params["separation"],
        monitor=params["monitor"],
        targets=(kind, width),
    )
    with (
        precision_scope(params["precision"]),
        distribution_scope(params["distribution"], int(params["batch_size"])),
    ):
        report = device_report()
        logger.info(
            "Keras %s backend on %s, precision %s (training.precision: %s), distribution %s",
            report["backend"],
            report["devices"],
            report["precision"],
            params["precision"],
            params["distribution"],
        )
        model, history = fit_with_checkpoints(
            lambda: compile_training_model(config, params, weights, epochs * feeder.steps),
            feeder,
            validation,
            epochs=epochs,
            directory=params["checkpoint_dir"],
            fingerprint=_fingerprint(
                params, augmentation_params, preprocessing_params, split, samples
            ),
            resume=bool(params["resume"]),
            max_minutes=params["max_minutes"],
            poly_power=_poly_power(params),
            fit_to_budget=fits_budget(params),
            description=f"{samples} {params['augmentation_mode']} samples",
        )
    table = pd.DataFrame(history)
    best_row = table.loc[table[params["monitor"]].idxmax()]
    metric_history = {
        column: [
            {"value": float(v), "step": int(e)}
            for v, e in zip(table[column], table["epoch"], strict=True)
        ]
        for column in table.columns
        if column != "epoch"
    }
    best = {
        str(k): {"value": float(v), "step": int(best_row["epoch"])}
        for k, v in best_row.items()
        if str(k).startswith("val_")
    }
    logger.info(
        "Best epoch %d: val MIoU %.4f, val nucleus IoU %.4f",
        int(best_row["epoch"]),
        best_row["val_miou_pooled"],
        best_row["val_nucleus_iou_pooled"],
    )
    # Saved with the model (KerasModelDataset): evaluation and inference refuse other input.
    model.trained_preprocessing = effective_preprocessing(preprocessing_params)
    return model, table, metric_history, best


def log_model_to_mlflow(model: keras.Model) -> keras.Model:
    """Pass the trained model to the MLflow model dataset (Keras flavor), which logs it."""
    return model


def plot_training_curves(history: pd.DataFrame) -> matplotlib.figure.Figure:
    """Per-epoch validation MIoU and MPA, and training/validation loss (like paper Fig. 7)."""
    figure = matplotlib.figure.Figure(figsize=(10, 4), dpi=100)
    scores, losses = figure.subplots(1, 2)
    for column, label in (
        ("val_miou_pooled", "MIoU"),
        ("val_mpa_pooled", "MPA"),
        ("val_nucleus_iou_pooled", "nucleus IoU"),
    ):
        if column in history:
            scores.plot(history["epoch"], history[column], marker="o", label=label)
    scores.set(xlabel="epoch", ylabel="validation score", title="Validation scores")
    scores.legend()
    scores.grid(alpha=0.3)
    for column, label in (("loss", "training loss"), ("val_loss", "validation loss")):
        if column in history:
            losses.plot(history["epoch"], history[column], marker="o", label=label)
    losses.set(xlabel="epoch", ylabel="weighted cross-entropy", title="Loss")
    losses.legend()
    losses.grid(alpha=0.3)
    for axis in (scores, losses):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    return figure
