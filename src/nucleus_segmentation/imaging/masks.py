"""Merging per-nucleus masks into label maps, and per-image nucleus statistics."""

from __future__ import annotations

from collections.abc import Sequence

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


def merge_nucleus_masks(
    masks: Sequence[np.ndarray], names: Sequence[str], shape: tuple[int, int]
) -> tuple[np.ndarray, list[str]]:
    """Merge one binary mask per nucleus into an instance label map.

    Args:
        masks: HxW (or HxWxC) arrays, nonzero inside the nucleus.
        names: a file name per mask, used in error messages.
        shape: (height, width) of the image the masks belong to.

    Returns:
        ``(labels, empty)``: an HxW uint16 map with 0 for background and 1..N in input order
        (empty masks get no id), and the names of the masks that were empty.

    Raises:
        MaskError: a mask of another size than the image, two masks that overlap, or more
            nuclei than uint16 can number.
    """
    height, width = int(shape[0]), int(shape[1])
    labels = np.zeros((height, width), dtype=np.uint16)
    owner: list[str] = []
    empty: list[str] = []
    for mask, name in zip(masks, names, strict=True):
        if mask.shape[:2] != (height, width):
            raise MaskError(
                name, f"mask is {mask.shape[0]}x{mask.shape[1]} but its image is {height}x{width}"
            )
        binary = binarize_mask(mask)
        # Work inside the bounding box: a nucleus covers well under 1 % of a typical image.
        x, y, w, h = cv2.boundingRect(binary)
        if w == 0 or h == 0:
            empty.append(name)
            continue
        inside = binary[y : y + h, x : x + w].astype(bool)
        region = labels[y : y + h, x : x + w]
        taken = region[inside]
        if taken.any():
            other = owner[int(taken[taken > 0][0]) - 1]
            raise MaskError(
                name, f"overlaps nucleus mask {other} on {int((taken > 0).sum())} pixels"
            )
        if len(owner) >= np.iinfo(np.uint16).max:
            raise MaskError(name, "more than 65535 nuclei in one image")
        owner.append(name)
        region[inside] = len(owner)
    return labels, empty


def labels_to_mask(labels: np.ndarray) -> np.ndarray:
    """Instance label map -> merged binary mask, HxW uint8 {0, 1}."""
    return (labels > 0).astype(np.uint8)


def nucleus_areas(labels: np.ndarray) -> np.ndarray:
    """Pixel area of every nucleus id present in ``labels`` (background excluded)."""
    counts = np.bincount(labels.ravel())[1:]
    return counts[counts > 0]
