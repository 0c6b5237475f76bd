"""Pixel metrics of the paper (3.3) from a confusion matrix, in numpy and in ``keras.ops``.

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

The numpy functions serve evaluation; ``ConfusionMatrixMetric`` accumulates the same matrix
with ``keras.ops`` during training, so both report the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import keras
import numpy as np
from keras import ops

PACKAGE = "nucleus_segmentation"

SCORES = ("pa", "mpa", "miou", "nucleus_iou")


# numpy (evaluation)


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


# keras.ops (training)


def _class_ids(labels, num_classes: int):
    """Sparse ``(B, H, W[, 1])`` ids or ``(B, H, W, K)`` one-hot/probabilities -> int32 ids."""
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 4 and labels.shape[-1] == num_classes:
        return ops.cast(ops.argmax(labels, axis=-1), "int32")
    if len(labels.shape) == 4:
        labels = ops.squeeze(labels, axis=-1)
    return ops.cast(labels, "int32")


def confusion_matrix_ops(y_true, y_pred, num_classes: int = 2, sample_weight=None):
    """``keras.ops`` twin of ``confusion_matrix``: ``(K, K)`` float32 (weighted) counts.

    ``y_true`` and ``y_pred`` may be class ids ``(B, H, W[, 1])`` or per-class
    ``(B, H, W, K)`` one-hot/probabilities (argmax taken); ``sample_weight``, ``(B,)`` or
    broadcastable to ``(B, H, W)``, weights each pixel's count.
    """
    true_ids = ops.reshape(_class_ids(y_true, num_classes), (-1,))
    pred_ids = ops.reshape(_class_ids(y_pred, num_classes), (-1,))
    true_hot = ops.one_hot(true_ids, num_classes, dtype="float32")
    pred_hot = ops.one_hot(pred_ids, num_classes, dtype="float32")
    if sample_weight is not None:
        weight = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
        if len(weight.shape) == 1:
            # One weight per image, as fit passes per-sample weights.
            weight = ops.reshape(weight, (-1, 1, 1))
        shape = ops.shape(_class_ids(y_true, num_classes))
        weight = ops.reshape(ops.broadcast_to(weight, shape), (-1, 1))
        pred_hot = pred_hot * weight
    # (K, N) @ (N, K): one matrix product instead of a scatter, fast on every backend.
    return ops.matmul(ops.transpose(true_hot), pred_hot)


def scores_from_confusion_ops(cm, epsilon: float = 1e-7) -> dict:
    """``keras.ops`` twin of ``scores_from_confusion``: scalar float32 tensors.

    Undefined classes are left out of the means as in numpy; where no class is defined the
    score is 0 instead of NaN (the epsilon guards keep gradients and logs finite).
    """
    cm = ops.cast(cm, "float32")
    diagonal = ops.diagonal(cm)
    true_total = ops.sum(cm, axis=1)
    union = true_total + ops.sum(cm, axis=0) - diagonal

    def defined_mean(numerator, denominator):
        defined = ops.cast(denominator > 0, "float32")
        ratios = numerator / ops.maximum(denominator, epsilon)
        return ops.sum(ratios * defined) / ops.maximum(ops.sum(defined), 1.0)

    return {
        "pa": ops.sum(diagonal) / ops.maximum(ops.sum(cm), epsilon),
        "mpa": defined_mean(diagonal, true_total),
        "miou": defined_mean(diagonal, union),
        "nucleus_iou": diagonal[1] / ops.maximum(union[1], epsilon),
    }


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConfusionMatrixMetric(keras.metrics.Metric):
    """Streaming PA, MPA, MIoU or nucleus IoU over everything seen since the last reset.

    Accumulates the ``(K, K)`` confusion matrix of the batches (pooled, like the
    ``*_pooled`` numbers of ``evaluate_segmentation``) in a float32 variable, exact up to
    2**24 pixels per cell and then within float32 rounding (1e-7 relative).

    Args:
        score: one of ``"pa"``, ``"mpa"``, ``"miou"``, ``"nucleus_iou"``.
        num_classes: K.
        name: metric name in logs; default ``score``.

    ``update_state(y_true, y_pred, sample_weight=None)`` takes sparse or one-hot labels and
    ``(B, H, W, K)`` probabilities; ``result()`` is a float32 scalar in [0, 1].
    """

    def __init__(
        self, score: str = "miou", num_classes: int = 2, name: str | None = None, dtype=None
    ):
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        super().__init__(name=name or score, dtype=dtype)
        self.score = score
        self.num_classes = int(num_classes)
        self.confusion = self.add_variable(
            shape=(self.num_classes, self.num_classes),
            initializer="zeros",
            dtype="float32",
            name="confusion",
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        batch = confusion_matrix_ops(y_true, y_pred, self.num_classes, sample_weight)
        self.confusion.assign(self.confusion + batch)

    def result(self):
        return scores_from_confusion_ops(self.confusion)[self.score]

    def reset_state(self):
        self.confusion.assign(ops.zeros((self.num_classes, self.num_classes), "float32"))

    def get_config(self):
        config = super().get_config()
        config.update(score=self.score, num_classes=self.num_classes)
        return config


def segmentation_metrics(
    num_classes: int = 2, scores: Sequence[str] = SCORES
) -> list[ConfusionMatrixMetric]:
    """One ``ConfusionMatrixMetric`` per score, for ``model.compile(metrics=...)``."""
    return [ConfusionMatrixMetric(score, num_classes) for score in scores]
