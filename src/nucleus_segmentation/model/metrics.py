"""Pixel metrics of the paper (3.3) from a confusion matrix, in numpy.

``N[p, q]`` counts the pixels of true class ``p`` predicted as ``q`` (rows: truth, columns:
prediction), over K = k + 1 classes:

- PA   = sum_p N_pp / sum_p sum_q N_pq                                (pixel accuracy)
- MPA  = 1/K sum_p N_pp / sum_q N_pq                                  (mean class accuracy)
- MIoU = 1/K sum_p N_pp / (sum_q N_pq + sum_q N_qp - N_pp)            (mean IoU)
- nucleus IoU = the IoU term of class 1 alone.

A class whose ratio is 0/0 (MPA: no true pixel of the class; IoU: the class neither true
nor predicted) is left out of the mean instead of counting as 0 or 1; the means are then
over the remaining classes. Pooled over a whole set all classes occur and the formulas
are the paper's; per image this matters for images without nuclei.

Training's per-epoch validation and evaluation both use these (through the segmentation
path), so both report the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

SCORES = ("pa", "mpa", "miou", "nucleus_iou")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = 2) -> np.ndarray:
    """``(K, K)`` int64 counts ``N[p, q]`` of true class p predicted as q.

    Args:
        y_true, y_pred: class-id arrays of the same shape (e.g. HxW uint8 {0, 1}); take the
            argmax of probabilities first.
        num_classes: K; values must lie in ``0..K-1``.
    """
    y_true = np.asarray(y_true).ravel().astype(np.int64)
    y_pred = np.asarray(y_pred).ravel().astype(np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.size} true pixels but {y_pred.size} predicted")
    for values in (y_true, y_pred):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"class ids must lie in 0..{num_classes - 1}")
    counts = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _ratios(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise ratio with NaN where the denominator is 0 (an undefined class)."""
    out = np.full(numerator.shape, np.nan, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _mean_defined(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def class_accuracy(cm: np.ndarray) -> np.ndarray:
    """``(K,)`` float64 ``N_pp / sum_q N_pq``; NaN for a class with no true pixel."""
    cm = np.asarray(cm, dtype=np.float64)
    return _ratios(np.diag(cm), cm.sum(axis=1))


def class_iou(cm: np.ndarray) -> np.ndarray:
    """``(K,)`` float64 IoU per class; NaN for a class neither true nor predicted."""
    cm = np.asarray(cm, dtype=np.float64)
    diagonal = np.diag(cm)
    return _ratios(diagonal, cm.sum(axis=1) + cm.sum(axis=0) - diagonal)


def pixel_accuracy(cm: np.ndarray) -> float:
    """PA in [0, 1]; NaN for an empty matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else float("nan")


def mean_pixel_accuracy(cm: np.ndarray) -> float:
    """MPA in [0, 1], the mean of ``class_accuracy`` over the classes with true pixels."""
    return _mean_defined(class_accuracy(cm))


def mean_iou(cm: np.ndarray) -> float:
    """MIoU in [0, 1], the mean of ``class_iou`` over the classes that occur."""
    return _mean_defined(class_iou(cm))


def nucleus_iou(cm: np.ndarray, nucleus_class: int = 1) -> float:
    """IoU of the nucleus class in [0, 1]; NaN when it is neither true nor predicted."""
    return float(class_iou(cm)[nucleus_class])


def scores_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """``{"pa", "mpa", "miou", "nucleus_iou"}`` of one confusion matrix, floats in [0, 1]."""
    return {
        "pa": pixel_accuracy(cm),
        "mpa": mean_pixel_accuracy(cm),
        "miou": mean_iou(cm),
        "nucleus_iou": nucleus_iou(cm),
    }


def evaluate_segmentation(
    truths: Iterable[np.ndarray], predictions: Iterable[np.ndarray], num_classes: int = 2
) -> dict[str, float]:
    """PA, MPA, MIoU and nucleus IoU pooled over a set and averaged per image.

    Pooled (``"<score>_pooled"``): from the sum of the images' confusion matrices, so large
    images weigh more; this is how the paper's table reads. Per image
    (``"<score>_per_image"``): the mean of each image's score over the images where it is
    defined (an image without nuclei, predicted empty, has no nucleus IoU).

    Args:
        truths, predictions: paired class-id maps (HxW, values 0..K-1); sizes may differ
            between pairs.
        num_classes: K.

    Returns:
        Floats in [0, 1] (NaN only if no image defines a score), plus ``"images"``.
    """
    total = np.zeros((num_classes, num_classes), dtype=np.int64)
    per_image: dict[str, list[float]] = {score: [] for score in SCORES}
    count = 0
    for truth, prediction in zip(truths, predictions, strict=True):
        cm = confusion_matrix(truth, prediction, num_classes)
        total += cm
        for score, value in scores_from_confusion(cm).items():
            per_image[score].append(value)
        count += 1
    results: dict[str, float] = {"images": count}
    for score, value in scores_from_confusion(total).items():
        results[f"{score}_pooled"] = value
    for score, values in per_image.items():
        results[f"{score}_per_image"] = _mean_defined(np.asarray(values, dtype=np.float64))
    return results
