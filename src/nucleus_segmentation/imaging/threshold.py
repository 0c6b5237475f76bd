"""Classical threshold baselines of the paper's Table 2: Otsu and DE-tuned multilevel Otsu.

Both work on the preprocessed HxW uint8 gray image, where nuclei are bright on a dark
background, and return HxW uint8 {0, 1} masks (1 = nucleus). The multilevel variant follows
ref. [14]: the k thresholds that maximise Otsu's between-class variance over k + 1 classes,
searched with differential evolution instead of the O(256^k) exhaustive scan.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import differential_evolution
from skimage.filters import threshold_otsu

GREY_LEVELS = 256


def _check_gray_uint8(image: np.ndarray, caller: str) -> None:
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"{caller} expects an HxW uint8 image, got {image.shape} {image.dtype}")


def _check_levels(levels: int) -> None:
    if levels < 1:
        raise ValueError(f"multilevel threshold levels must be >= 1, got {levels}")


def otsu_segment(image: np.ndarray) -> np.ndarray:
    """HxW uint8 gray image -> HxW uint8 {0, 1} mask of the pixels above Otsu's threshold.

    The threshold is skimage's ``threshold_otsu`` (grey levels 0..255); a constant image has
    no foreground and gives an all-zero mask.
    """
    _check_gray_uint8(image, "otsu_segment")
    if image.min() == image.max():
        return np.zeros(image.shape, np.uint8)
    return (image > threshold_otsu(image)).astype(np.uint8)


def _between_class_variance(
    thresholds: np.ndarray, cum_weight: np.ndarray, cum_moment: np.ndarray
) -> np.ndarray:
    """Otsu's between-class variance (grey levels^2) of each column of ``thresholds``.

    ``thresholds`` is k x S integer grey levels (any order); class i holds the grey levels g
    with t_(i-1) < g <= t_i, the same ``image > t`` convention as :func:`otsu_segment`.
    ``cum_weight`` and ``cum_moment`` are the 257-long cumulative sums of p(g) and g p(g) with
    a leading 0, so each class weight and first moment is one difference: O(k) per column.
    """
    ends = np.sort(thresholds, axis=0) + 1
    n_columns = ends.shape[1]
    edges = np.concatenate(
        [np.zeros((1, n_columns), int), ends, np.full((1, n_columns), GREY_LEVELS)]
    )
    weight = np.diff(cum_weight[edges], axis=0)
    moment = np.diff(cum_moment[edges], axis=0)
    # sum_i w_i (mu_i - mu_T)^2 = sum_i m_i^2 / w_i - mu_T^2; an empty class adds nothing.
    spread = np.divide(moment**2, weight, out=np.zeros_like(moment), where=weight > 0)
    return spread.sum(axis=0) - cum_moment[-1] ** 2


def multilevel_thresholds(
    image: np.ndarray,
    levels: int = 2,
    seed: int = 0,
    maxiter: int = 200,
    popsize: int = 20,
) -> np.ndarray:
    """The ``levels`` grey-level thresholds that best split an image into ``levels + 1`` classes.

    "Best" is Otsu's criterion, the largest between-class variance of the image's 256-bin
    histogram, as in ref. [14]; the thresholds are searched with scipy's
    ``differential_evolution`` over integers (``popsize * levels`` candidates for at most
    ``maxiter`` generations, seeded with ``seed`` so the result is reproducible).

    Args:
        image: HxW uint8 gray image.
        levels: number of thresholds k >= 1; ``levels=1`` is plain Otsu.
        seed: seed of the differential evolution.
        maxiter: most generations of the differential evolution.
        popsize: population size per threshold.

    Returns:
        int64 array of ``levels`` sorted thresholds in 0..255; class i holds the pixels with
        ``thresholds[i-1] < value <= thresholds[i]``. A constant image has no between-class
        variance to maximise: every threshold is its grey value, so every pixel is in class 0.
    """
    _check_gray_uint8(image, "multilevel_thresholds")
    _check_levels(levels)
    if maxiter < 1 or popsize < 1:
        raise ValueError(f"maxiter and popsize must be >= 1, got {maxiter} and {popsize}")
    low, high = int(image.min()), int(image.max())
    if low == high:
        return np.full(levels, low, np.int64)
    probability = np.bincount(image.ravel(), minlength=GREY_LEVELS) / image.size
    cum_weight = np.concatenate([[0.0], np.cumsum(probability)])
    cum_moment = np.concatenate([[0.0], np.cumsum(probability * np.arange(GREY_LEVELS))])

    def negative_variance(candidates: np.ndarray) -> np.ndarray:
        return -_between_class_variance(np.rint(candidates).astype(int), cum_weight, cum_moment)

    # A threshold outside [min, max - 1] only leaves a class empty, and splitting a class never
    # lowers the between-class variance, so the optimum always lies inside the image's range.
    result = differential_evolution(
        negative_variance,
        [(low, high - 1)] * levels,
        seed=seed,
        maxiter=maxiter,
        popsize=popsize,
        # No gradient polish on an integer step function; tol=0 runs until the population
        # agrees (or maxiter): scipy's default 1 % spread stopped early at a local optimum.
        polish=False,
        tol=0.0,
        integrality=[True] * levels,
        # One call per generation with all candidates as columns: the histogram sums are
        # numpy-vectorised, so a 512x512 image takes milliseconds, not a Python loop per candidate.
        vectorized=True,
        updating="deferred",
    )
    return np.sort(np.rint(result.x).astype(np.int64))


def multilevel_segment(
    image: np.ndarray,
    levels: int = 2,
    seed: int = 0,
    nucleus_classes: int = 1,
    maxiter: int = 200,
    popsize: int = 20,
) -> np.ndarray:
    """HxW uint8 gray image -> HxW uint8 {0, 1} mask of the brightest ``nucleus_classes`` classes.

    The image is split into ``levels + 1`` classes by :func:`multilevel_thresholds`. On our
    preprocessed images the darkest class is background and the brightest is nucleus; with
    ``levels=2`` the middle class catches what plain Otsu wrongly merges into nuclei: the
    blurred halo around bright nuclei, cytoplasm in stained tissue, uneven background. Hence
    the default keeps only the brightest class; raise ``nucleus_classes`` (up to ``levels``)
    for images whose dim nuclei fall in a middle class.
    """
    _check_levels(levels)
    if not 1 <= nucleus_classes <= levels:
        raise ValueError(f"nucleus_classes must be in 1..levels ({levels}), got {nucleus_classes}")
    thresholds = multilevel_thresholds(image, levels, seed, maxiter, popsize)
    return (image > thresholds[levels - nucleus_classes]).astype(np.uint8)
