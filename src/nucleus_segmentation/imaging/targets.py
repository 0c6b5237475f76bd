"""Per-pixel training targets from instance label maps.

``binary``: 0 background, 1 nucleus (the paper's two classes).
``boundary``: 0 background, 1 nucleus interior, 2 nucleus boundary: the pixels of each
nucleus closer than ``width`` pixels to its own edge, where it meets the background or another
nucleus (what the DSB2018 winners added so touching nuclei come apart: the interior of two
touching nuclei is two blobs, however wide the neck between them). Edges of the image are
not boundaries (a nucleus cut by a crop does not end there).

``contact_weights``: per-pixel loss weights that make the pixels where nuclei touch or
nearly touch count more (the U-Net paper's separation border weights, what the DSB2018
winners used on contact zones).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import find_boundaries

from nucleus_segmentation.errors import ParameterError

TARGETS = {"binary": 2, "boundary": 3}  # kind -> number of classes
BACKGROUND, NUCLEUS, BOUNDARY = 0, 1, 2


def num_classes(kind: str) -> int:
    """Classes of the network output for a target ``kind``."""
    if kind not in TARGETS:
        raise ParameterError(
            f"training.targets.kind must be one of {sorted(TARGETS)}, got {kind!r}"
        )
    return TARGETS[kind]


def boundary_targets(labels: np.ndarray, width: int = 2) -> np.ndarray:
    """HxW instance labels (0 background) -> HxW uint8 classes {0 background, 1 interior,
    2 boundary}: a nucleus pixel is boundary when it lies closer than ``width`` pixels
    (Euclidean, the edge pixel itself at 0) to a pixel of that nucleus that touches (4-
    connectivity) the background or another nucleus: a band ``width`` pixels thick."""
    if int(width) < 1:
        raise ParameterError(f"training.targets.boundary_width must be >= 1 pixel, got {width!r}")
    labels = np.asarray(labels)
    foreground = labels > 0
    targets = foreground.astype(np.uint8)
    if not foreground.any():
        return targets
    edge = find_boundaries(labels, connectivity=1, mode="inner") & foreground
    if not edge.any():  # one nucleus filling the image: no edge to be near
        return targets
    near = ndimage.distance_transform_edt(~edge) < int(width)
    targets[near & foreground] = BOUNDARY
    return targets


def check_contact(weight: float, sigma: float) -> None:
    """Refuse contact weight settings that are not finite numbers in range, naming them."""
    for name, value in (("contact_weight", weight), ("contact_sigma", sigma)):
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise ParameterError(f"training.targets.{name} must be a number, got {value!r}")
        if not np.isfinite(value):
            raise ParameterError(f"training.targets.{name} must be finite, got {value!r}")
    if not weight >= 0:
        raise ParameterError(f"training.targets.contact_weight must be >= 0, got {weight!r}")
    if not sigma > 0:
        raise ParameterError(f"training.targets.contact_sigma must be > 0 pixels, got {sigma!r}")


def contact_weights(labels: np.ndarray, weight: float, sigma: float) -> np.ndarray:
    """HxW instance labels -> HxW float32 loss weights ``1 + weight * exp(-(d1 + d2)^2 /
    (2 sigma^2))`` (Ronneberger et al. 2015, eq. 2): ``d1`` and ``d2`` are each pixel's
    distances to its nearest and second-nearest nucleus (0 inside a nucleus, so a nucleus
    pixel's term falls with its distance to the next nucleus). High in the gaps and along
    the contacts between neighbours, 1 where a pixel has one nucleus or none within
    ``4 sigma`` (the term is dropped there: under ``0.0004 weight``). Distances are
    Euclidean, to the nucleus' nearest pixel; ``weight`` 0 gives all ones."""
    check_contact(weight, sigma)
    labels = np.asarray(labels)
    weights = np.ones(labels.shape, dtype=np.float32)
    if float(weight) == 0 or labels.max(initial=0) == 0:
        return weights
    cut = 4 * float(sigma)
    reach = int(np.ceil(cut))  # box padding: whole pixels
    nearest = np.full(labels.shape, np.inf)
    second = np.full(labels.shape, np.inf)
    height, width = labels.shape
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        # Only pixels within ``reach`` of this nucleus can get a term from it; the box holds
        # all of the nucleus, so the distances inside it are exact.
        rows = slice(max(box[0].start - reach, 0), min(box[0].stop + reach, height))
        cols = slice(max(box[1].start - reach, 0), min(box[1].stop + reach, width))
        distance = ndimage.distance_transform_edt(labels[rows, cols] != index)
        first, other = nearest[rows, cols], second[rows, cols]
        other[...] = np.minimum(other, np.maximum(first, distance))
        first[...] = np.minimum(first, distance)
    near = second <= cut
    total = nearest[near] + second[near]
    weights[near] += float(weight) * np.exp(-(total**2) / (2.0 * float(sigma) ** 2))
    return weights


def class_targets(labels: np.ndarray, kind: str = "binary", width: int = 2) -> np.ndarray:
    """HxW instance labels -> HxW uint8 class ids for a target ``kind`` (module docstring)."""
    num_classes(kind)
    if kind == "boundary":
        return boundary_targets(labels, width)
    return (np.asarray(labels) > 0).astype(np.uint8)


def nucleus_maps(probabilities: np.ndarray) -> np.ndarray:
    """HxWxK class probabilities -> what separation needs: HxW nucleus probability for
    binary models (K = 2); HxWx2 (nucleus = 1 - background, interior) for boundary models
    (K = 3)."""
    classes = probabilities.shape[-1]
    if classes == TARGETS["binary"]:
        return probabilities[..., NUCLEUS]
    if classes == TARGETS["boundary"]:
        nucleus = 1.0 - probabilities[..., BACKGROUND]
        return np.stack([nucleus, probabilities[..., NUCLEUS]], axis=-1).astype(np.float32)
    raise ValueError(f"a model with {classes} output classes: expected 2 or 3")
