"""Whole-image prediction with a fully convolutional model (any image size)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def to_network_input(images: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 HxW images of one size -> (B, H, W, 1) float32 in [0, 1]."""
    return (np.stack(images).astype(np.float32) / 255.0)[..., None]


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Reflect-pad the bottom and right of an HxW image so both sides divide by ``multiple``.

    Reflection continues the texture (and a nucleus cut by the edge) instead of adding a
    black frame the network never saw in training.
    """
    height, width = image.shape[:2]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not (pad_h or pad_w):
        return image
    mode = "reflect" if height > pad_h and width > pad_w else "symmetric"
    return np.pad(image, ((0, pad_h), (0, pad_w)), mode=mode)


def predict_probabilities(
    model, images: Sequence[np.ndarray], multiple: int = 16, batch_size: int = 4
) -> list[np.ndarray]:
    """Class probabilities for each uint8 HxW image: a list of HxWxK float32 arrays.

    Images are padded to a multiple of the model's output stride, batched with others of the
    same padded size, and the padding is cut off again: no resizing, so no distortion.
    """
    padded = [pad_to_multiple(image, multiple) for image in images]
    results: list[np.ndarray | None] = [None] * len(images)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(padded):
        by_shape.setdefault(image.shape[:2], []).append(index)
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            batch = to_network_input([padded[i] for i in chunk])
            probabilities = np.asarray(model.predict_on_batch(batch), dtype=np.float32)
            for i, probability in zip(chunk, probabilities, strict=True):
                height, width = images[i].shape[:2]
                results[i] = probability[:height, :width]
    return results  # type: ignore[return-value]


FLIPS = {"none": (), "horizontal": (1,), "vertical": (0,), "both": (0, 1)}


def _flip(image: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.flip(image, axes) if axes else image


def _rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize HxW(xK) by ``scale`` (at least 16 px a side); area when shrinking, else linear."""
    height, width = image.shape[:2]
    size = (max(16, round(width * scale)), max(16, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def _resize_to(probability: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if probability.shape[:2] == shape:
        return probability
    resized = cv2.resize(probability, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return resized.reshape(shape + probability.shape[2:])


def predict_with_tta(
    model,
    images: Sequence[np.ndarray],
    multiple: int = 16,
    batch_size: int = 4,
    scales: Sequence[float] = (1.0,),
    flips: Sequence[str] = ("none",),
) -> list[np.ndarray]:
    """Class probabilities averaged over test-time variants: every scale x every flip.

    Each image is resized by each of ``scales`` (the paper's multi-scale inference uses 0.55
    to 1.55), flipped by each of ``flips`` (none | horizontal | vertical | both), predicted
    whole, flipped back and resized back to its own size; the softmax outputs are averaged.
    ``scales=(1.0,)`` and ``flips=("none",)`` is plain :func:`predict_probabilities`.
    Returns one HxWxK float32 array per image, at the image's own size.
    """
    unknown = sorted(set(flips) - set(FLIPS))
    if unknown or not flips or not scales:
        raise ValueError(f"test-time flips must be a non-empty subset of {sorted(FLIPS)}")
    if any(float(scale) <= 0 for scale in scales):
        raise ValueError(f"test-time scales must be positive, got {list(scales)}")
    totals: list[np.ndarray | None] = [None] * len(images)
    for scale in scales:
        scaled = [_rescale(image, float(scale)) if scale != 1 else image for image in images]
        for flip in flips:
            axes = FLIPS[flip]
            flipped = [np.ascontiguousarray(_flip(image, axes)) for image in scaled]
            predicted = predict_probabilities(model, flipped, multiple, batch_size)
            for index, probability in enumerate(predicted):
                restored = _resize_to(_flip(probability, axes), images[index].shape[:2])
                totals[index] = restored if totals[index] is None else totals[index] + restored
    count = len(scales) * len(flips)
    return [np.asarray(total / count, dtype=np.float32) for total in totals]  # type: ignore[operator]
