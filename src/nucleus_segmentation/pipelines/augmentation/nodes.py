"""Nodes of the ``augmentation`` pipeline."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from nucleus_segmentation import bundle
from nucleus_segmentation.errors import DataProblem, ParameterError
from nucleus_segmentation.imaging.augment import (
    AugmentConfig,
    StainJitter,
    augment_sample,
    sample_rng,
)
from nucleus_segmentation.imaging.colour import jitter_stains
from nucleus_segmentation.imaging.masks import labels_to_mask, median_nucleus_area
from nucleus_segmentation.parallel import parallel_map
from nucleus_segmentation.segment import (
    ScalePolicy,
    SegmentationSettings,
    prepare_image,
    prepare_labels,
)

logger = logging.getLogger(__name__)


def _augment_one(
    task: tuple[str, int, np.ndarray, np.ndarray, np.ndarray | None, ScalePolicy | None],
    config: AugmentConfig,
    seed: int,
    jitter: StainJitter,
    preprocessing: Mapping[str, Any] | None,
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """All copies of one training image (runs in a worker process). With a raw colour image
    (stain jitter on for its modality) each copy starts from that image's own stain jitter,
    preprocessed as in the preprocessing stage on the task's scale grid; else from the
    task's image (the preprocessed one, or the one inference would predict at another
    scale: :func:`_nucleus_size_factors`)."""
    image_id, copies, image, labels, raw, scale = task
    out = []
    for copy in range(copies):
        source = image
        if raw is not None:
            # Its own generator, so the geometry of a copy is the same with jitter on or off.
            gains, shifts = jitter.draw(sample_rng(seed, f"{image_id}/stain", copy))
            source = prepare_image(jitter_stains(raw, gains, shifts), preprocessing, scale)
        new_image, new_labels = augment_sample(
            source, labels, config, sample_rng(seed, image_id, copy)
        )
        fields = {"image": new_image, "labels": new_labels, "mask": labels_to_mask(new_labels)}
        out.append((f"{image_id}_aug{copy:02d}", fields))
    return out


def _copies(split: pd.DataFrame, train_ids: list[str], params: Mapping[str, Any]) -> list[int]:
    """Copies to store of each training image: ``copies_per_modality`` where it names the
    image's modality (to oversample rare ones), else ``copies_per_image``."""
    default = int(params["copies_per_image"])
    per_modality = dict(params.get("copies_per_modality") or {})
    for modality, copies in per_modality.items():
        if not isinstance(copies, int) or isinstance(copies, bool) or copies < 1:
            raise ParameterError(
                f"augmentation.copies_per_modality.{modality} must be a whole number >= 1, "
                f"got {copies!r}"
            )
    if not per_modality:
        return [default] * len(train_ids)
    if "modality" not in split:
        raise ParameterError(
            "augmentation.copies_per_modality needs a data split with a modality column"
        )
    modality = split.set_index("image_id")["modality"]
    copies = [per_modality.get(modality[image_id], default) for image_id in train_ids]
    counts = pd.Series([modality[i] for i in train_ids]).value_counts()
    logger.info(
        "Copies per training image by modality: %s",
        ", ".join(
            f"{name} {per_modality.get(name, default)} x {count}" for name, count in counts.items()
        ),
    )
    return copies


def _jittered_ids(split: pd.DataFrame, jitter: StainJitter, ingested, settings) -> set[str]:
    """Training images whose copies get stain jitter: those of a listed modality.
    ``settings``: the preprocessing and segmentation parameters the jittered copies are
    prepared with (all needed when the jitter is on)."""
    if not jitter.enabled:
        return set()
    if ingested is None or None in settings or "modality" not in split:
        raise ParameterError(
            "augmentation.stain_jitter needs the ingested images, the preprocessing and "
            "segmentation parameters and a data split with a modality column (the "
            "augmentation pipeline passes them all)"
        )
    train = split.loc[split["split"] == "train"]
    chosen = train.loc[train["modality"].isin(jitter.modalities), "image_id"].tolist()
    logger.info("Stain jitter on %d of %d training images", len(chosen), len(train))
    return set(chosen)


def _nucleus_size_factors(ingested, train_ids: list[str], scale: ScalePolicy) -> dict[str, float]:
    """``{image id: factor}`` for the training images inference would predict again at
    another factor (:meth:`ScalePolicy.adapted_factor`), judged by the median area of the
    image's own annotated nuclei, where inference judges by the predicted ones."""
    if not scale.adapts:
        raise ParameterError(
            "augmentation.adapt_nucleus_size needs segmentation.scale.mode native with a "
            f"nucleus_area band (got mode {scale.mode}, nucleus_area "
            f"{list(scale.nucleus_area)}): without it inference rescales no image"
        )
    factors = {}
    for image_id in train_ids:
        factor = scale.adapted_factor(
            median_nucleus_area(bundle.field(ingested, image_id, "labels"))
        )
        if factor is not None:
            factors[image_id] = factor
    if factors:
        values = sorted(factors.values())
        logger.info(
            "Nucleus-size adaptation: %d of %d training images rescaled as inference would "
            "(factors %.2f to %.2f)",
            len(factors),
            len(train_ids),
            values[0],
            values[-1],
        )
    else:
        logger.info("Nucleus-size adaptation: no training image leaves the nucleus_area band")
    return factors


def _colour_source(ingested, image_id: str, split: pd.DataFrame) -> np.ndarray:
    """The raw colour image a jittered copy starts from; a gray one stops the run naming it
    (in this process, before its task reaches a worker)."""
    image = bundle.field(ingested, image_id, "image")
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        modality = split.set_index("image_id").at[image_id, "modality"]
        raise DataProblem(
            f"ingested image {image_id} (modality {modality}) is not a colour image "
            f"(shape {image.shape}): stain jitter needs RGB; remove its modality from "
            "augmentation.stain_jitter.modalities"
        )
    return image


def augment_training_images(
    preprocessed: Mapping[str, np.ndarray],
    split: pd.DataFrame,
    params: Mapping[str, Any],
    ingested: Mapping[str, np.ndarray] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    segmentation: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """``copies_per_image`` augmented copies of every *training* image (or, for the
    modalities ``copies_per_modality`` names, as many as it says: oversampling).

    Validation and test images are never read here. Each copy's randomness depends only on
    (``seed``, image id, copy index), so the result is byte-identical for the same seed,
    whatever the worker count. The copies are then shuffled with the same seed (the paper's
    random sample shuffling). With ``stain_jitter.enabled`` the copies of training images of
    the listed modalities start from their raw colour image (``ingested``) with jittered
    stains, preprocessed with ``preprocessing`` on the ``segmentation`` scale grid exactly as
    the preprocessing stage does. With ``adapt_nucleus_size`` a training image whose median
    annotated nucleus lies outside ``segmentation.scale.nucleus_area`` is prepared from its
    raw image at the factor inference would predict it at (the same preprocessing and
    resizing), so training sees nuclei at the sizes the network gets at inference.

    Returns:
        A bundle of ``<image_id>_augNN`` samples: ``image`` (SxS uint8, SxSx3 for colour
        input), ``labels`` (SxS uint16), ``mask`` (SxS uint8), S = ``transforms.output_size``.
    """
    config = AugmentConfig.from_params(dict(params["transforms"]))
    jitter = StainJitter.from_params(params.get("stain_jitter"))
    seed = int(params["seed"])
    adapt = params.get("adapt_nucleus_size", False)
    if not isinstance(adapt, bool):
        raise ParameterError(
            f"augmentation.adapt_nucleus_size must be true or false, got {adapt!r}"
        )
    train_ids = split.loc[split["split"] == "train", "image_id"].tolist()
    if not train_ids:
        raise DataProblem("the split has no training image to augment")
    if adapt and (ingested is None or preprocessing is None or segmentation is None):
        raise ParameterError(
            "augmentation.adapt_nucleus_size needs the ingested images and the preprocessing "
            "and segmentation parameters (the augmentation pipeline passes them all)"
        )
    jittered = _jittered_ids(split, jitter, ingested, (preprocessing, segmentation))
    scale = SegmentationSettings.from_params(segmentation).scale if jittered or adapt else None
    factors = _nucleus_size_factors(ingested, train_ids, scale) if adapt else {}
    copies = _copies(split, train_ids, params)

    def task(image_id: str, image_copies: int) -> tuple:
        raw = _colour_source(ingested, image_id, split) if image_id in jittered else None
        if image_id not in factors:
            image = bundle.field(preprocessed, image_id, "image")
            labels = bundle.field(preprocessed, image_id, "labels")
            return image_id, image_copies, image, labels, raw, scale
        # Prepared from the raw image on the grid inference would predict it on.
        rescaled = dataclasses.replace(scale, factor=factors[image_id])
        image = prepare_image(bundle.field(ingested, image_id, "image"), preprocessing, rescaled)
        labels = prepare_labels(bundle.field(ingested, image_id, "labels"), rescaled)
        return image_id, image_copies, image, labels, raw, rescaled

    tasks = (task(i, c) for i, c in zip(train_ids, copies, strict=True))
    work = partial(
        _augment_one,
        config=config,
        seed=seed,
        jitter=jitter,
        preprocessing=preprocessing if jittered else None,
    )
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
