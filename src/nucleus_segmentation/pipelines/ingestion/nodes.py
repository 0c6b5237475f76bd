"""Nodes of the ``ingestion`` pipeline."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from nucleus_segmentation import bundle
from nucleus_segmentation.datasets.dsb import DSBSource, RawSample
from nucleus_segmentation.errors import InputProblem, ParameterError
from nucleus_segmentation.imaging.codec import InvalidImageError
from nucleus_segmentation.imaging.colour import classify_modality, drop_alpha
from nucleus_segmentation.imaging.masks import (
    MergedMasks,
    labels_to_mask,
    merge_nucleus_masks,
    nucleus_areas,
)
from nucleus_segmentation.imaging.rle import labels_to_rles, rles_to_labels
from nucleus_segmentation.parallel import parallel_map

logger = logging.getLogger(__name__)

METADATA_COLUMNS = [
    "image_id",
    "height",
    "width",
    "channels",
    "bit_depth",
    "modality",
    "nucleus_count",
    "mean_nucleus_area",
    "label_source",
    "image_file",
]
REJECTED_COLUMNS = ["image_id", "file", "problem", "action"]


class IngestionError(RuntimeError, InputProblem):
    """No usable image in the raw data: the run must stop."""


def _label_map(raw: RawSample, max_overlap_fraction: float) -> MergedMasks:
    shape = raw.image.shape[:2]
    if raw.label_source == "masks":
        return merge_nucleus_masks(raw.masks, raw.mask_files, shape, max_overlap_fraction)
    return MergedMasks(rles_to_labels(raw.rles, shape, raw.rle_names))


def _ingest_one(image_id: str, source: DSBSource, params: Mapping[str, Any]) -> dict[str, Any]:
    """Read, validate and merge one image (runs in a worker process)."""
    try:
        raw = source.read(image_id)
        merged = _label_map(raw, float(params["max_overlap_fraction"]))
    except InvalidImageError as error:
        return {"image_id": image_id, "rejected": [(error.name, error.problem, "image skipped")]}
    image, labels = drop_alpha(raw.image), merged.labels
    areas = nucleus_areas(labels)
    row = {
        "image_id": image_id,
        "height": image.shape[0],
        "width": image.shape[1],
        "channels": 1 if image.ndim == 2 else image.shape[2],
        "bit_depth": 8 * image.dtype.itemsize,
        "modality": classify_modality(image, **params["modality"]),
        "nucleus_count": int(areas.size),
        "mean_nucleus_area": float(areas.mean()) if areas.size else 0.0,
        "label_source": raw.label_source,
        "image_file": raw.image_file,
    }
    notes = [(name, "mask is empty (no nonzero pixel)", "mask dropped") for name in merged.empty]
    notes += [
        (name, f"overlaps nucleus mask {other} on {pixels} pixels", "overlap left to earlier mask")
        for name, other, pixels in merged.overlaps
    ]
    fields = {
        "image": np.ascontiguousarray(image),
        "labels": labels,
        "mask": labels_to_mask(labels),
    }
    return {"image_id": image_id, "row": row, "fields": fields, "rejected": notes}


def ingest_dsb_images(
    source: DSBSource, params: Mapping[str, Any]
) -> tuple[dict[str, np.ndarray], pd.DataFrame, pd.DataFrame]:
    """Decode every image of a DSB source and merge its nucleus masks (or RLE rows).

    Args:
        source: the indexed raw data (zip or folder).
        params: ``n_workers`` ("auto" or an int), ``modality`` thresholds and
            ``max_overlap_fraction`` (see :func:`merge_nucleus_masks`).

    Returns:
        ``(ingested, metadata, rejected)``: a bundle with per image the image as stored
        (HxW or HxWx3, uint8/uint16, alpha dropped), the uint16 label map and the uint8 merged
        mask; a table with one row per kept image (``METADATA_COLUMNS``); and one row per
        skipped image, dropped mask or resolved overlap, naming the file and the problem.

    Raises:
        IngestionError: no image could be used.
    """
    work = partial(_ingest_one, source=source, params=dict(params))
    samples, rows, rejected = [], [], []
    for result in parallel_map(work, source.image_ids, params.get("n_workers", "auto"), 8):
        for file, problem, action in result["rejected"]:
            logger.warning("%s: %s (%s)", file, problem, action)
            rejected.append((result["image_id"], file, problem, action))
        if "fields" in result:
            samples.append((result["image_id"], result["fields"]))
            rows.append(result["row"])
    if not samples:
        problems = "\n".join(f"  {file}: {problem}" for _, file, problem, _ in rejected[:10])
        raise IngestionError(
            f"{source.path}: none of its {len(source.image_ids)} images is usable:\n{problems}"
        )
    skipped = sum(1 for *_, action in rejected if action == "image skipped")
    logger.info("Ingested %d images from %s (%d skipped)", len(samples), source.path, skipped)
    metadata = pd.DataFrame(rows, columns=METADATA_COLUMNS)
    return bundle.pack(samples), metadata, pd.DataFrame(rejected, columns=REJECTED_COLUMNS)


def encode_instances_as_rle(
    ingested: Mapping[str, np.ndarray], metadata: pd.DataFrame
) -> pd.DataFrame:
    """Label maps -> Kaggle ``stage1_train_labels.csv`` table (``ImageId,EncodedPixels``),
    one row per nucleus, images in metadata order, nuclei in label order."""
    records = [
        (image_id, rle)
        for image_id in metadata["image_id"]
        for rle in labels_to_rles(ingested[f"{image_id}/labels"])
    ]
    return pd.DataFrame(records, columns=["ImageId", "EncodedPixels"])


def split_by_modality(metadata: pd.DataFrame, params: Mapping[str, Any]) -> pd.DataFrame:
    """Seeded train/validation/test split of image ids, stratified by ``params["stratify_by"]``.

    Within each stratum the ids are shuffled with ``params["seed"]`` and cut by
    ``params["ratios"]``; a stratum of 3 or more images gives at least one image to every
    split with a nonzero ratio, so rare modalities (brightfield) are always evaluated.

    Returns:
        Table ``image_id, <stratum column>, split`` sorted by image id.
    """
    ratios = {name: float(value) for name, value in params["ratios"].items()}
    if set(ratios) != {"train", "validation", "test"} or min(ratios.values()) < 0:
        raise ParameterError(f"split ratios need train, validation, test >= 0; got {ratios}")
    if abs(sum(ratios.values()) - 1.0) > 1e-6:
        raise ParameterError(f"split ratios must sum to 1, got {sum(ratios.values())}")
    column = params.get("stratify_by", "modality")
    rng = np.random.default_rng(int(params["seed"]))
    parts = []
    for stratum, group in metadata.groupby(column, sort=True):
        ids = np.sort(group["image_id"].to_numpy())
        rng.shuffle(ids)
        counts = {}
        for name in ("validation", "test"):
            count = int(round(ratios[name] * len(ids)))
            if ratios[name] > 0 and len(ids) >= 3:
                count = max(count, 1)
            counts[name] = count
        n_val, n_test = counts["validation"], counts["test"]
        n_train = len(ids) - n_val - n_test
        labels = ["train"] * n_train + ["validation"] * n_val + ["test"] * n_test
        parts.append(pd.DataFrame({"image_id": ids, column: stratum, "split": labels}))
    split = pd.concat(parts).sort_values("image_id").reset_index(drop=True)
    logger.info("Split: %s", split["split"].value_counts().to_dict())
    return split
