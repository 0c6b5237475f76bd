"""Scores of instance label maps against true ones, per image and per group (framework-free).

Everything is measured on the image's own pixel grid, on what a user gets: the predicted
instance label map (its mask is ``labels > 0``), as the Data Science Bowl scored it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from nucleus_segmentation.imaging.matching import (
    detection_scores,
    dsb_score,
    label_ids,
    matched_area_errors,
    split_merge_counts,
)
from nucleus_segmentation.model.metrics import evaluate_segmentation

PIXEL_SCORES = ("pa", "mpa", "miou", "nucleus_iou", "dice")
INSTANCE_SCORES = ("dsb_score", "precision", "recall", "f1")


def dice_from_iou(iou: float) -> float:
    """Dice from the IoU of the same counts: 2TP/(2TP+FP+FN) = 2J/(1+J); NaN stays NaN."""
    return float(2 * iou / (1 + iou)) if np.isfinite(iou) else float("nan")


def nucleus_count(labels: np.ndarray) -> int:
    """How many nuclei (distinct non-zero ids) a label map holds."""
    return int(np.count_nonzero(label_ids(labels)[0]))


def score_image(truth: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """Pixel scores of the masks, the DSB score, detection P/R/F1 at IoU 0.5 with counts, and
    the signed area error of matched nuclei (mean, and the number of matches), and how many
    true nuclei came out split and how many predicted ones merge several
    (:func:`split_merge_counts`)."""
    true_mask, predicted_mask = (truth > 0).astype(np.uint8), (prediction > 0).astype(np.uint8)
    pixel = evaluate_segmentation([true_mask], [predicted_mask])
    errors = matched_area_errors(truth, prediction)
    split, merged = split_merge_counts(truth, prediction)
    return {
        **{s: pixel[f"{s}_pooled"] for s in PIXEL_SCORES if s != "dice"},
        "dice": dice_from_iou(pixel["nucleus_iou_pooled"]),
        "dsb_score": dsb_score(truth, prediction),
        "true_nuclei": nucleus_count(truth),
        "predicted_nuclei": nucleus_count(prediction),
        **detection_scores(truth, prediction),
        "area_error": float(errors.mean()) if errors.size else float("nan"),
        "matched": int(errors.size),
        "split": split,
        "merged": merged,
    }


def score_images(
    truths: Mapping[str, np.ndarray],
    predictions: Mapping[str, np.ndarray],
    groups: Mapping[str, str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-image scores and per-group (plus ``all``) summaries of predicted label maps.

    Args:
        truths: ``{image id: HxW true label map}``.
        predictions: ``{image id: HxW predicted label map}`` (the images scored).
        groups: ``{image id: group}``, e.g. the modality.

    Returns:
        ``(per_image, per_group)``: one row per image (:func:`score_image`), and one row per
        group: pixel scores pooled over the group's pixels and averaged per image, instance
        scores averaged over its images, and ``area_error`` the mean over all its matched
        nuclei (weighted by matches, so images with many nuclei count more).
    """
    rows = [
        {"image_id": k, "group": groups[k], **score_image(truths[k], p)}
        for k, p in predictions.items()
    ]
    per_image = pd.DataFrame(rows)
    return per_image, summarise_groups(per_image, truths, predictions, "group")


def summarise_groups(
    per_image: pd.DataFrame,
    truths: Mapping[str, np.ndarray],
    predictions: Mapping[str, np.ndarray],
    column: str,
) -> pd.DataFrame:
    """One row per value of ``per_image[column]`` (sorted) plus ``all``, from the per-image
    rows of :func:`score_image` (with ``image_id``): pixel scores pooled over the group's
    pixels and averaged per image, instance scores averaged over its images, ``area_error``
    weighted by matches, ``split`` / ``merged`` nuclei summed. The first column is named
    ``column``."""
    summary = []
    members_of = {g: per_image[per_image[column] == g] for g in sorted(set(per_image[column]))}
    members_of["all"] = per_image
    for group, members in members_of.items():
        ids = members["image_id"].tolist()
        pooled = evaluate_segmentation(
            [(truths[k] > 0).astype(np.uint8) for k in ids],
            [(predictions[k] > 0).astype(np.uint8) for k in ids],
        )
        pooled["dice_pooled"] = dice_from_iou(pooled["nucleus_iou_pooled"])
        pooled["dice_per_image"] = float(members["dice"].mean())
        weights = members["matched"].to_numpy(float)
        area = members["area_error"].to_numpy(float)
        summary.append(
            {
                column: group,
                "images": len(ids),
                **{f"{s}_pooled": pooled[f"{s}_pooled"] for s in PIXEL_SCORES},
                **{f"{s}_per_image": pooled[f"{s}_per_image"] for s in PIXEL_SCORES},
                **{k: float(members[k].mean()) for k in INSTANCE_SCORES},
                "area_error": float(np.nansum(area * weights) / weights.sum())
                if weights.sum()
                else float("nan"),
                "split": int(members["split"].sum()),
                "merged": int(members["merged"].sum()),
            }
        )
    return pd.DataFrame(summary)
