"""Nodes of the ``augmentation`` pipeline."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from nucleus_segmentation import bundle
from nucleus_segmentation.errors import DataProblem
from nucleus_segmentation.imaging.augment import AugmentConfig, augment_sample, sample_rng
from nucleus_segmentation.imaging.masks import labels_to_mask
from nucleus_segmentation.parallel import parallel_map

logger = logging.getLogger(__name__)


def _augment_one(
    task: tuple[str, np.ndarray, np.ndarray], config: AugmentConfig, copies: int, seed: int
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """All copies of one training image (runs in a worker process)."""
    image_id, image, labels = task
    out = []
    for copy in range(copies):
        new_image, new_labels = augment_sample(
            image, labels, config, sample_rng(seed, image_id, copy)
        )
        fields = {"image": new_image, "labels": new_labels, "mask": labels_to_mask(new_labels)}
        out.append((f"{image_id}_aug{copy:02d}", fields))
    return out


def augment_training_images(
    preprocessed: Mapping[str, np.ndarray], split: pd.DataFrame, params: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """``copies_per_image`` augmented copies of every *training* image.

    Validation and test images are never read here. Each copy's randomness depends only on
    (``seed``, image id, copy index), so the result is byte-identical for the same seed,
    whatever the worker count. The copies are then shuffled with the same seed (the paper's
    random sample shuffling).

    Returns:
        A bundle of ``<image_id>_augNN`` samples: ``image`` (SxS uint8), ``labels`` (SxS
        uint16), ``mask`` (SxS uint8), S = ``transforms.output_size``.
    """
    config = AugmentConfig.from_params(dict(params["transforms"]))
    seed, copies = int(params["seed"]), int(params["copies_per_image"])
    train_ids = split.loc[split["split"] == "train", "image_id"].tolist()
    if not train_ids:
        raise DataProblem("the split has no training image to augment")
    tasks = (
        (
            image_id,
            bundle.field(preprocessed, image_id, "image"),
            bundle.field(preprocessed, image_id, "labels"),
        )
        for image_id in train_ids
    )
    work = partial(_augment_one, config=config, copies=copies, seed=seed)
    samples = [
        s
        for result in parallel_map(
            work, tasks, params.get("n_workers", "auto"), 4, progress="augmenting images"
        )
        for s in result
    ]
    order = np.random.default_rng(seed).permutation(len(samples))
    logger.info("Augmented %d training images into %d samples", len(train_ids), len(samples))
    return bundle.pack(samples[i] for i in order)
