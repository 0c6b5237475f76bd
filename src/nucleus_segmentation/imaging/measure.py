"""Per-nucleus measurements: area, centroid, bounding box and intensity in the image's units."""

from __future__ import annotations

import numpy as np
import pandas as pd
from skimage.measure import regionprops_table

from nucleus_segmentation.imaging.colour import drop_alpha

# ITU-R BT.601 luma, as OpenCV's RGB -> gray, but kept in float so 16-bit stays 16-bit.
_LUMA = np.array([0.299, 0.587, 0.114])
NUCLEUS_COLUMNS = (
    "nucleus_id",
    "area_px",
    "centroid_y",
    "centroid_x",
    "bbox_min_y",
    "bbox_min_x",
    "bbox_max_y",
    "bbox_max_x",
    "mean_intensity",
)
_REGIONPROPS = {
    "label": "nucleus_id",
    "area": "area_px",
    "centroid-0": "centroid_y",
    "centroid-1": "centroid_x",
    "bbox-0": "bbox_min_y",
    "bbox-1": "bbox_min_x",
    "bbox-2": "bbox_max_y",
    "bbox-3": "bbox_max_x",
    "intensity_mean": "mean_intensity",
}


def gray_intensity(image: np.ndarray) -> np.ndarray:
    """Decoded image -> HxW float64 gray values in the image's own units (0..255 for 8-bit,
    0..65535 for 16-bit): gray passes through exactly, RGB(A) becomes its luma, alpha is
    ignored."""
    visible = drop_alpha(image)
    if visible.ndim == 2:
        return visible.astype(np.float64)
    return visible.astype(np.float64) @ _LUMA


def measure_nuclei(labels: np.ndarray, image: np.ndarray) -> pd.DataFrame:
    """One row per nucleus of an instance label map, in increasing id order.

    Columns: ``nucleus_id``; ``area_px`` (pixels); ``centroid_y``, ``centroid_x`` (row and
    column, pixels from the top-left pixel's centre); ``bbox_min_y``, ``bbox_min_x``,
    ``bbox_max_y``, ``bbox_max_x`` (half-open, as numpy slices and skimage: the box is
    ``labels[min_y:max_y, min_x:max_x]``); ``mean_intensity`` (mean gray value over the
    nucleus' pixels in the image's own units, :func:`gray_intensity`).

    Raises:
        ValueError: labels of another size than the image.
    """
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels are {labels.shape} but the image is {image.shape[:2]}")
    table = regionprops_table(
        labels,
        intensity_image=gray_intensity(image),
        properties=("label", "area", "centroid", "bbox", "intensity_mean"),
    )
    frame = pd.DataFrame(table).rename(columns=_REGIONPROPS)[list(NUCLEUS_COLUMNS)]
    return frame.astype(
        {name: "int64" for name in NUCLEUS_COLUMNS if name.startswith(("nucleus", "area", "bbox"))}
    )
