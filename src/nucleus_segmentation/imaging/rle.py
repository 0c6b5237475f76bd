"""Kaggle run-length encoding, as in ``stage1_train_labels.csv`` and ``stage1_solution.csv``.

Pixels are numbered from 1, top to bottom then left to right (column-major); a mask is the
string of ``start length`` pairs of its runs, separated by single spaces.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from nucleus_segmentation.imaging.masks import MaskError


def _runs(flat: np.ndarray) -> np.ndarray:
    """(start, length) pairs, 0-based starts, of the True runs of a 1-D bool array."""
    padded = np.concatenate(([False], flat, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = edges[0::2], edges[1::2]
    return np.stack([starts, ends - starts], axis=1)


def _format(runs: np.ndarray, offset: int) -> str:
    out = runs.copy()
    out[:, 0] += offset + 1
    return " ".join(map(str, out.ravel().tolist()))


def rle_encode(mask: np.ndarray) -> str:
    """HxW binary mask -> Kaggle RLE string ("" for an empty mask)."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    return _format(_runs(flat), 0)


def rle_decode(rle: str, shape: tuple[int, int], name: str = "RLE") -> np.ndarray:
    """Kaggle RLE string -> HxW uint8 {0, 1} mask of ``shape`` = (height, width).

    Raises:
        MaskError: malformed text, or a run outside the image (``name`` says which row).
    """
    height, width = int(shape[0]), int(shape[1])
    text = "" if rle is None or (isinstance(rle, float) and np.isnan(rle)) else str(rle)
    try:
        values = np.array(text.split(), dtype=np.int64)
    except ValueError:
        raise MaskError(
            name, f"run-length encoding is not a list of integers: {text[:40]!r}"
        ) from None
    if values.size % 2:
        raise MaskError(name, "run-length encoding has an odd number of values")
    starts, lengths = values[0::2] - 1, values[1::2]
    if values.size and (starts.min() < 0 or lengths.min() < 1):
        raise MaskError(name, "run-length encoding has a start below 1 or a length below 1")
    if values.size and (starts + lengths).max() > height * width:
        raise MaskError(name, f"run-length encoding runs past the end of a {height}x{width} image")
    flat = np.zeros(height * width, dtype=np.uint8)
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        flat[start : start + length] = 1
    return flat.reshape((height, width), order="F")


def labels_to_rles(labels: np.ndarray) -> list[str]:
    """Instance label map -> one RLE string per nucleus, in increasing id order."""
    height = labels.shape[0]
    rles = []
    for index, window in enumerate(ndimage.find_objects(labels), start=1):
        if window is None:
            continue
        # Full-height column band: a run may continue from the foot of one column to the
        # head of the next, and Kaggle's encoding then writes it as one run.
        columns = window[1]
        band = labels[:, columns] == index
        rles.append(_format(_runs(band.ravel(order="F")), columns.start * height))
    return rles


def rles_to_labels(
    rles: Sequence[str], shape: tuple[int, int], names: Sequence[str] | None = None
) -> np.ndarray:
    """One RLE string per nucleus -> HxW uint16 label map (ids 1..N in input order).

    Raises:
        MaskError: a malformed RLE, or two nuclei that cover the same pixel.
    """
    names = list(names) if names is not None else [f"RLE row {i + 1}" for i in range(len(rles))]
    labels = np.zeros(tuple(int(s) for s in shape), dtype=np.uint16)
    for index, (rle, name) in enumerate(zip(rles, names, strict=True), start=1):
        mask = rle_decode(rle, shape, name).astype(bool)
        if (labels[mask] > 0).any():
            other = names[int(labels[mask].max()) - 1]
            raise MaskError(name, f"overlaps nucleus {other}")
        labels[mask] = index
    return labels
