"""Nodes of the ``ingestion`` pipeline."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage

from nucleus_segmentation import bundle
from nucleus_segmentation.datasets.dsb import DSBSource, RawSample
from nucleus_segmentation.errors import InputProblem, ParameterError
from nucleus_segmentation.imaging.codec import InvalidImageError
from nucleus_segmentation.imaging.colour import (
    PROFILE_COLUMNS,
    classify_modality,
    drop_alpha,
    intensity_profile,
)
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
    *PROFILE_COLUMNS,
]
SPLITS = ("train", "validation", "test")
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
        **intensity_profile(image),
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
    for result in parallel_map(
        work, source.image_ids, params.get("n_workers", "auto"), 8, progress="ingesting images"
    ):
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
        for rle in labels_to_rles(bundle.field(ingested, image_id, "labels"))
    ]
    return pd.DataFrame(records, columns=["ImageId", "EncodedPixels"])


def group_acquisitions(metadata: pd.DataFrame, params: Mapping[str, Any]) -> pd.Series:
    """Acquisition group of every image (a string per row of ``metadata``).

    Images of one acquisition share the modality and the image size, and their intensity
    profile (gray mean, spread and 99th percentile, colour-channel means, in gray levels)
    and typical nucleus size differ little. Within each (modality, height, width) stratum,
    images are clustered hierarchically (average linkage, Chebyshev distance: the largest
    difference of any one feature) with gray levels in units of ``intensity_scale`` and the
    log of the mean nucleus area in units of ``area_scale``, cut where clusters are more
    than ``distance`` units apart on average. Average linkage, not single: single linkage
    chains one stratum's many similar-looking acquisitions into one giant group (321 of the
    334 256x256 fluorescence images of stage1_train). The scales are fixed numbers, not
    fitted to the data. ``enabled: false`` makes every image its own group (a random split).
    """
    if not params.get("enabled", True):
        return metadata["image_id"].astype(str).rename("group")
    intensity, area = float(params["intensity_scale"]), float(params["area_scale"])
    distance = float(params["distance"])
    if min(intensity, area, distance) <= 0:
        raise ParameterError(
            f"split.grouping intensity_scale, area_scale and distance must be positive, got "
            f"{intensity}, {area}, {distance}"
        )
    features = np.column_stack(
        [metadata[column].to_numpy(float) / intensity for column in PROFILE_COLUMNS]
        + [np.log(metadata["mean_nucleus_area"].to_numpy(float) + 1.0) / area]
    )
    groups = pd.Series("", index=metadata.index, name="group")
    strata = metadata.groupby(["modality", "height", "width"], sort=True).indices
    for (modality, height, width), rows in strata.items():
        prefix = f"{modality}-{height}x{width}"
        if len(rows) == 1:
            groups.iloc[rows] = f"{prefix}-1"
            continue
        links = linkage(features[rows], method="average", metric="chebyshev")
        clusters = fcluster(links, t=distance, criterion="distance")
        groups.iloc[rows] = [f"{prefix}-{c}" for c in clusters]
    return groups


def split_by_acquisition(metadata: pd.DataFrame, params: Mapping[str, Any]) -> pd.DataFrame:
    """Seeded train/validation/test split in which no acquisition straddles two splits.

    Images are grouped by :func:`group_acquisitions` (``params["grouping"]``); within each
    stratum (``params["stratify_by"]``, the modality) the groups are shuffled with
    ``params["seed"]`` and each goes whole to the split furthest below its share of the
    stratum's images (``params["ratios"]``) that it does not overfill by more than half that
    share (else to training). A stratum of 3 or more groups gives at least one
    group to every split with a nonzero ratio, so rare modalities are always evaluated.

    ``params["hold_out"]`` (a group name or a list of them; null: none) is the
    leave-one-group-out protocol: those acquisitions alone form the test split, and the
    other groups are split between training and validation in the ratio of theirs.

    Returns:
        Table ``image_id, <stratum column>, group, split`` sorted by image id.
    """
    ratios = {name: float(value) for name, value in params["ratios"].items()}
    if set(ratios) != {"train", "validation", "test"} or min(ratios.values()) < 0:
        raise ParameterError(f"split ratios need train, validation, test >= 0; got {ratios}")
    if abs(sum(ratios.values()) - 1.0) > 1e-6:
        raise ParameterError(f"split ratios must sum to 1, got {sum(ratios.values())}")
    column = params.get("stratify_by", "modality")
    table = metadata[["image_id", column]].assign(
        group=group_acquisitions(metadata, params["grouping"])
    )
    held_out = _held_out_groups(table["group"], params.get("hold_out"))
    if held_out:
        kept = ratios["train"] + ratios["validation"]
        if kept <= 0:
            raise ParameterError("split.hold_out needs a nonzero train or validation ratio")
        ratios = {"train": ratios["train"] / kept, "validation": ratios["validation"] / kept}
        ratios["test"] = 0.0
    rng = np.random.default_rng(int(params["seed"]))
    assigned: dict[str, str] = dict.fromkeys(held_out, "test")
    rest = table[~table["group"].isin(held_out)]
    for _, stratum in rest.groupby(column, sort=True):
        sizes = stratum.groupby("group").size().sort_index()
        names = sizes.index.to_numpy()
        rng.shuffle(names)
        counts = dict.fromkeys(SPLITS, 0)
        members: dict[str, list[str]] = {name: [] for name in SPLITS}
        for group in names:
            deficit = {s: ratios[s] * len(stratum) - counts[s] for s in SPLITS}
            # A group that would overfill validation or test by more than half of its
            # share goes to training: one acquisition must not make up a whole test split.
            fits = [
                s
                for s in SPLITS
                if s == "train" or sizes[group] <= deficit[s] + 0.5 * ratios[s] * len(stratum)
            ]
            chosen = max(fits, key=lambda s: (deficit[s], -SPLITS.index(s)))
            counts[chosen] += int(sizes[group])
            members[chosen].append(group)
        if len(names) >= 3:
            for empty in [s for s in SPLITS if ratios[s] > 0 and not members[s]]:
                donor = max(SPLITS, key=lambda s: len(members[s]))
                smallest = min(members[donor], key=lambda g: sizes[g])
                members[donor].remove(smallest)
                members[empty].append(smallest)
        assigned.update({group: name for name, groups in members.items() for group in groups})
    split = table.assign(split=table["group"].map(assigned))
    split = split.sort_values("image_id").reset_index(drop=True)
    logger.info(
        "Split by acquisition: %d groups; images %s",
        split["group"].nunique(),
        split["split"].value_counts().to_dict(),
    )
    return split


def _held_out_groups(groups: pd.Series, hold_out: str | list[str] | None) -> list[str]:
    """The acquisition groups named by ``split.hold_out``, checked to exist."""
    if hold_out is None:
        return []
    names = [hold_out] if isinstance(hold_out, str) else [str(g) for g in hold_out]
    unknown = sorted(set(names) - set(groups))
    if unknown:
        largest = groups.value_counts().head(5)
        raise ParameterError(
            f"split.hold_out: no acquisition group {unknown}; the largest are "
            + ", ".join(f"{name} ({n} images)" for name, n in largest.items())
        )
    return names
