"""Nodes of the ``evaluation`` pipeline."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import pandas as pd

from nucleus_segmentation.imaging.instances import separate_instances
from nucleus_segmentation.imaging.matching import detection_scores, dsb_score
from nucleus_segmentation.model.metrics import evaluate_segmentation
from nucleus_segmentation.model.predict import predict_probabilities

logger = logging.getLogger(__name__)
PIXEL_SCORES = ("pa", "mpa", "miou", "nucleus_iou")


def predict_test_images(
    model: keras.Model,
    preprocessed: Mapping[str, np.ndarray],
    split: pd.DataFrame,
    params: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """Nucleus probability (HxW float32 0..1) of every *test* image, whole (no crops)."""
    ids = split.loc[split["split"] == "test", "image_id"].tolist()
    images = [preprocessed[f"{image_id}/image"] for image_id in ids]
    probabilities = predict_probabilities(
        model, images, int(params["multiple"]), int(params["batch_size"])
    )
    return {image_id: p[..., 1] for image_id, p in zip(ids, probabilities, strict=True)}


def evaluate_test_predictions(
    probabilities: Mapping[str, np.ndarray],
    preprocessed: Mapping[str, np.ndarray],
    split: pd.DataFrame,
    params: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict]]:
    """Pixel scores (paper 3.3) and instance scores (DSB metric, P/R/F1 at IoU 0.5) on the
    test split, nuclei separated by :func:`separate_instances` with ``params["instances"]``.

    Returns:
        ``(per_image, per_modality, metrics)``: one row per test image; one row per
        modality plus ``all`` (pixel scores pooled over the group's pixels, instance scores
        averaged over its images); and the ``all`` row as MLflow metrics.
    """
    modality = split.set_index("image_id")["modality"]
    rows, groups = [], {}
    for image_id, probability in probabilities.items():
        truth_labels = preprocessed[f"{image_id}/labels"]
        prediction = (probability > float(params["instances"]["threshold"])).astype(np.uint8)
        labels = separate_instances(probability, **params["instances"])
        pixel = evaluate_segmentation([preprocessed[f"{image_id}/mask"]], [prediction])
        detection = detection_scores(truth_labels, labels)
        rows.append(
            {
                "image_id": image_id,
                "modality": modality[image_id],
                **{s: pixel[f"{s}_pooled"] for s in PIXEL_SCORES},
                "dsb_score": dsb_score(truth_labels, labels),
                "true_nuclei": int(len(np.unique(truth_labels)) - 1),
                "predicted_nuclei": int(labels.max()),
                **detection,
            }
        )
        for group in (modality[image_id], "all"):
            groups.setdefault(group, []).append((preprocessed[f"{image_id}/mask"], prediction))
    per_image = pd.DataFrame(rows)
    summary = []
    for group, pairs in sorted(groups.items()):
        pooled = evaluate_segmentation([t for t, _ in pairs], [p for _, p in pairs])
        members = per_image if group == "all" else per_image[per_image["modality"] == group]
        summary.append(
            {
                "modality": group,
                "images": len(pairs),
                **{f"{s}_pooled": pooled[f"{s}_pooled"] for s in PIXEL_SCORES},
                **{f"{s}_per_image": pooled[f"{s}_per_image"] for s in PIXEL_SCORES},
                **{k: float(members[k].mean()) for k in ("dsb_score", "precision", "recall", "f1")},
            }
        )
    per_modality = pd.DataFrame(summary)
    overall = per_modality.set_index("modality").loc["all"]
    metrics = {str(k): {"value": float(v), "step": 0} for k, v in overall.items()}
    logger.info(
        "Test split: MIoU %.4f, nucleus IoU %.4f, DSB score %.4f",
        overall["miou_pooled"],
        overall["nucleus_iou_pooled"],
        overall["dsb_score"],
    )
    return per_image, per_modality, metrics
