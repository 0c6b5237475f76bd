"""Pictures of a segmentation for people: the image with nucleus contours, the binary mask."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage.segmentation import find_boundaries

from nucleus_segmentation.imaging.colour import drop_alpha, to_uint8

CONTOUR_MODES = ("inner", "outer", "thick")


def display_rgb(image: np.ndarray) -> np.ndarray:
    """Any decoded image -> a new HxWx3 uint8 RGB array for display.

    Alpha is dropped, gray is repeated into three channels, and 16-bit images are stretched
    over their own range (0.1 to 99.9 percentile, :func:`~.colour.to_uint8`: the same
    stretch the network input gets, robust to a few hot pixels). uint8 is shown as is.
    """
    visible = to_uint8(drop_alpha(image))
    if visible.ndim == 2:
        return np.repeat(visible[:, :, None], 3, axis=2)
    return visible.copy()


def draw_contours(
    image: np.ndarray,
    labels: np.ndarray,
    colour: Sequence[int] = (0, 255, 0),
    mode: str = "inner",
) -> np.ndarray:
    """The image as HxWx3 uint8 RGB (:func:`display_rgb`) with each nucleus' outline in
    ``colour`` (R, G, B 0..255).

    ``mode`` is skimage's :func:`~skimage.segmentation.find_boundaries` mode: ``inner``
    (default) draws on the nucleus' own border pixels, so two touching nuclei show the line
    between them; ``outer`` on the background just outside; ``thick`` both.

    Raises:
        ValueError: labels of another size than the image, an unknown mode, or a colour that
            is not three values in 0..255.
    """
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels are {labels.shape} but the image is {image.shape[:2]}")
    rgb = contour_colour(colour, mode)
    overlay = display_rgb(image)
    overlay[find_boundaries(labels, mode=mode)] = rgb
    return overlay


def contour_colour(colour: Sequence[int], mode: str = "inner") -> np.ndarray:
    """Check a contour style: ``colour`` as a uint8 RGB triple, ``mode`` one of
    :data:`CONTOUR_MODES`.

    Raises:
        ValueError: an unknown mode, or a colour that is not three values in 0..255.
    """
    if mode not in CONTOUR_MODES:
        raise ValueError(f"unknown contour mode {mode!r}: use one of {CONTOUR_MODES}")
    rgb = np.asarray(colour)
    if (
        rgb.shape != (3,)
        or not np.issubdtype(rgb.dtype, np.number)
        or rgb.min() < 0
        or rgb.max() > 255
    ):
        raise ValueError(f"contour colour must be three values 0..255 (R, G, B), got {colour}")
    return rgb.astype(np.uint8)


def mask_image(labels: np.ndarray) -> np.ndarray:
    """Instance label map -> HxW uint8 binary mask picture, 255 on nuclei and 0 elsewhere
    (0/255 rather than 0/1, so the file is visible in any viewer, as DSB's masks are)."""
    return np.where(labels > 0, np.uint8(255), np.uint8(0))
