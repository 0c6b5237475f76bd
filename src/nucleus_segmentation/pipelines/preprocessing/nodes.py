"""Nodes of the ``preprocessing`` pipeline."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from nucleus_segmentation import bundle
from nucleus_segmentation.imaging.geometry import resize_labels
from nucleus_segmentation.imaging.masks import labels_to_mask
from nucleus_segmentation.imaging.preprocess import preprocess_image

logger = logging.getLogger(__name__)


def preprocess_images(
    ingested: Mapping[str, np.ndarray], metadata: pd.DataFrame, params: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Apply :func:`preprocess_image` to every ingested image, and resize its label map to
    match (nearest neighbour). Per-image operations only: nothing here is fitted on the data,
    so it is the same for train, validation and test and cannot leak between them.

    Returns:
        A bundle with per image ``image`` (HxW uint8), ``labels`` (HxW uint16) and
        ``mask`` (HxW uint8 {0, 1}), in metadata order.
    """
    samples = []
    for image_id in metadata["image_id"]:
        image = preprocess_image(ingested[f"{image_id}/image"], params)
        labels = resize_labels(ingested[f"{image_id}/labels"], image.shape)
        samples.append(
            (image_id, {"image": image, "labels": labels, "mask": labels_to_mask(labels)})
        )
    logger.info("Preprocessed %d images", len(samples))
    return bundle.pack(samples)
