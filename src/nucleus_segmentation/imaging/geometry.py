"""Resizing of images and of label maps."""

from __future__ import annotations

import cv2
import numpy as np

_INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


def resize_image(
    image: np.ndarray, size: tuple[int, int], interpolation: str = "auto"
) -> np.ndarray:
    """Resize an image to ``size`` = (height, width).

    ``"auto"`` uses area averaging when shrinking (no aliasing of fine texture) and bilinear
    when enlarging (area would be blocky). dtype and channels are kept.
    """
    height, width = int(size[0]), int(size[1])
    if image.shape[:2] == (height, width):
        return image.copy()
    if interpolation == "auto":
        shrinking = height * width < image.shape[0] * image.shape[1]
        flag = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    elif interpolation in _INTERPOLATION:
        flag = _INTERPOLATION[interpolation]
    else:
        raise ValueError(
            f"unknown interpolation {interpolation!r}: use auto, {', '.join(_INTERPOLATION)}"
        )
    return cv2.resize(image, (width, height), interpolation=flag)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a label map or binary mask to ``size`` = (height, width) by nearest neighbour.

    Nearest neighbour is the only interpolation that never invents label values: averaging
    two nucleus ids, or a nucleus and background, would create ids that do not exist.
    """
    height, width = int(size[0]), int(size[1])
    if labels.shape[:2] == (height, width):
        return labels.copy()
    return cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
