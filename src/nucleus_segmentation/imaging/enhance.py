"""Contrast and smoothing: the paper's histogram equalization and Gaussian filter."""

from __future__ import annotations

import cv2
import numpy as np

from nucleus_segmentation.imaging.colour import stretch_percentiles

EQUALIZE_METHODS = ("global", "clahe", "percentile")


def equalize_histogram(
    gray: np.ndarray,
    method: str = "global",
    clip_limit: float = 2.0,
    tile_grid: int = 8,
    percentiles: tuple[float, float] = (1.0, 99.8),
) -> np.ndarray:
    """Equalize a uint8 HxW image.

    ``method="global"`` is the paper's global histogram equalization; ``"clahe"`` is
    contrast-limited adaptive equalization with ``clip_limit`` and a ``tile_grid`` x
    ``tile_grid`` grid, which keeps dim nuclei next to bright ones; ``"percentile"`` is the
    per-image normalisation of StarDist and Cellpose: a linear stretch between the image's own
    ``percentiles`` (low, high in 0..100), which keeps the order and ratios of intensities
    (a dim nucleus stays dimmer than a bright one) where equalization reshapes them.
    """
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ValueError(f"equalize_histogram expects HxW uint8, got {gray.shape} {gray.dtype}")
    if method == "global":
        return cv2.equalizeHist(gray)
    if method == "clahe":
        clahe = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(tile_grid, tile_grid))
        return clahe.apply(gray)
    if method == "percentile":
        return stretch_percentiles(gray, percentiles)
    raise ValueError(
        f"unknown histogram equalization method {method!r}: use one of {EQUALIZE_METHODS}"
    )


def gaussian_smooth(gray: np.ndarray, kernel_size: int = 5, sigma: float = 1.0) -> np.ndarray:
    """Gaussian-smooth a uint8 HxW image with a ``kernel_size`` x ``kernel_size`` kernel.

    ``kernel_size`` = 2l + 1 in the paper's notation and must be odd; ``sigma`` is the standard
    deviation in pixels. Borders are reflected (101) so edges keep their brightness.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"gaussian kernel_size must be a positive odd number, got {kernel_size}")
    if sigma <= 0:
        raise ValueError(f"gaussian sigma must be positive, got {sigma}")
    return cv2.GaussianBlur(
        gray,
        (kernel_size, kernel_size),
        sigmaX=sigma,
        sigmaY=sigma,
        borderType=cv2.BORDER_REFLECT_101,
    )
