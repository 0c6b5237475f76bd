"""Nodes of the ``preprocessing`` pipeline."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from nucleus_segmentation import bundle
from nucleus_segmentation.imaging.masks import labels_to_mask
from nucleus_segmentation.segment import SegmentationSettings, prepare_image, prepare_labels

logger = logging.getLogger(__name__)


def preprocess_images(
    ingested: Mapping[str, np.ndarray],
    metadata: pd.DataFrame,
    params: Mapping[str, Any],
    segmentation: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """Every ingested image as the network sees it: :func:`prepare_image` with the
    preprocessing ``params`` on the grid of the scale policy in ``segmentation["scale"]``
    (the image's own grid by default; 512x512 in ``--env paper``), which inference and
    evaluation apply identically; its label map goes to the same grid (nearest neighbour).
    Per-image operations only: nothing is fitted on the data, so nothing leaks between splits.

    Returns:
        A bundle with per image ``image`` (HxW uint8; HxWx3 for colour input), ``labels``
        (HxW uint16) and ``mask`` (HxW uint8 {0, 1}), in metadata order.
    """
    scale = SegmentationSettings.from_params(segmentation).scale
    samples = []
    for image_id in metadata["image_id"]:
        image = prepare_image(bundle.field(ingested, image_id, "image"), params, scale)
        labels = prepare_labels(bundle.field(ingested, image_id, "labels"), scale)
        samples.append(
            (image_id, {"image": image, "labels": labels, "mask": labels_to_mask(labels)})
        )
    logger.info("Preprocessed %d images (scale policy: %s)", len(samples), scale.mode)
    return bundle.pack(samples)
