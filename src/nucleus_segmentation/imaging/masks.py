"""Merging per-nucleus masks into label maps, and per-image nucleus statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from nucleus_segmentation.imaging.codec import InvalidImageError


class MaskError(InvalidImageError):
    """A nucleus mask (file or RLE row) that cannot be merged into a label map."""


def binarize_mask(mask: np.ndarray) -> np.ndarray:
    """Any nonzero value (in any channel) -> 1; returns HxW uint8 {0, 1}."""
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    return (mask > 0).astype(np.uint8)


@dataclass
class MergedMasks:
    """Result of :func:`merge_nucleus_masks`.

    labels: HxW uint16, 0 background, 1..N in input order (empty masks get no id).
    empty: names of masks with no nonzero pixel.
    overlaps: (name, earlier name, pixels) for each small overlap that was resolved by
        leaving the pixels to the earlier mask.
    """

    labels: np.ndarray
    empty: list[str] = field(default_factory=list)
    overlaps: list[tuple[str, str, int]] = field(default_factory=list)


def merge_nucleus_masks(
    masks: Sequence[np.ndarray],
    names: Sequence[str],
    shape: tuple[int, int],
    max_overlap_fraction: float = 0.0,
) -> MergedMasks:
    """Merge one binary mask per nucleus into an instance label map.

    Args:
        masks: HxW (or HxWxC) arrays, nonzero inside the nucleus.
        names: a file name per mask, used in messages.
        shape: (height, width) of the image the masks belong to.
        max_overlap_fraction: largest overlap with earlier masks, as a fraction of this
            mask's area, that is tolerated; those pixels stay with the earlier mask. DSB
            masks should never overlap, but the community-fixed stage1_train has a few
            1-2 pixel overlaps between halves of split nuclei; larger overlaps mean
            duplicated or wrong annotations.

    Raises:
        MaskError: a mask of another size than the image, an overlap above the tolerance,
            or more nuclei than uint16 can number.
    """
    height, width = int(shape[0]), int(shape[1])
    result = MergedMasks(np.zeros((height, width), dtype=np.uint16))
    owner: list[str] = []
    for mask, name in zip(masks, names, strict=True):
        if mask.shape[:2] != (height, width):
            raise MaskError(
                name, f"mask is {mask.shape[0]}x{mask.shape[1]} but its image is {height}x{width}"
            )
        binary = binarize_mask(mask)
        # Work inside the bounding box: a nucleus covers well under 1 % of a typical image.
        x, y, w, h = cv2.boundingRect(binary)
        if w == 0 or h == 0:
            result.empty.append(name)
            continue
        inside = binary[y : y + h, x : x + w].astype(bool)
        region = result.labels[y : y + h, x : x + w]
        taken = region[inside]
        overlap = int(np.count_nonzero(taken))
        if overlap:
            other = owner[int(taken[taken > 0][0]) - 1]
            if overlap > max_overlap_fraction * taken.size:
                raise MaskError(name, f"overlaps nucleus mask {other} on {overlap} pixels")
            result.overlaps.append((name, other, overlap))
            inside &= region == 0
        if len(owner) >= np.iinfo(np.uint16).max:
            raise MaskError(name, "more than 65535 nuclei in one image")
        owner.append(name)
        region[inside] = len(owner)
    return result


def labels_to_mask(labels: np.ndarray) -> np.ndarray:
    """Instance label map -> merged binary mask, HxW uint8 {0, 1}."""
    return (labels > 0).astype(np.uint8)


def nucleus_areas(labels: np.ndarray) -> np.ndarray:
    """Pixel area of every nucleus id present in ``labels`` (background excluded)."""
    counts = np.bincount(labels.ravel())[1:]
    return counts[counts > 0]


def median_nucleus_area(labels: np.ndarray) -> float | None:
    """Median pixel area of the nuclei in ``labels``; ``None`` when there is none."""
    areas = nucleus_areas(labels)
    return float(np.median(areas)) if areas.size else None
