"""Instance-level scores: IoU between labelled nuclei and the Data Science Bowl metric."""

from __future__ import annotations

import numpy as np

DSB_THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))

# Label maps with ids up to this (and up to a few per pixel) are indexed by counting
# (memory: about 17 bytes per possible id, 285 MB at the limit).
_COUNTED_IDS = 1 << 24


def label_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(labels, return_inverse=True)`` with the inverse flattened: the sorted ids
    of a label map and each pixel's position among them. Non-negative integer maps (every
    label map here) are indexed by counting, in linear time (about 40x faster than
    numpy's sort for a 520x696 map); anything else, or ids far sparser than the pixels,
    goes to ``np.unique``."""
    flat = np.asarray(labels).ravel()
    most = min(_COUNTED_IDS, 4 * flat.size + (1 << 16))
    if flat.dtype.kind not in "biu" or (
        flat.size and not 0 <= int(flat.min()) <= int(flat.max()) <= most
    ):
        ids, index = np.unique(flat, return_inverse=True)
        return ids, index.ravel()
    # Positions as the platform's index type: a mask then indexes by position rather than
    # selecting, and uint64 counts on every numpy version.
    counted = flat.astype(np.intp, copy=False)
    present = np.bincount(counted) > 0
    position = np.cumsum(present) - 1
    return np.flatnonzero(present).astype(flat.dtype), position[counted]


def instance_iou(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """IoU of every true nucleus (rows) with every predicted nucleus (columns).

    Args:
        truth, prediction: HxW integer label maps, 0 background; ids need not be contiguous.
    """
    intersection, true_area, pred_area = _overlaps(truth, prediction)
    union = true_area + pred_area - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def split_merge_counts(
    truth: np.ndarray, prediction: np.ndarray, fraction: float = 0.5
) -> tuple[int, int]:
    """(split, merged): true nuclei cut into pieces, and predicted nuclei joining several.

    A true nucleus is *split* when two or more predicted nuclei each have more than
    ``fraction`` of their own area inside it; a predicted nucleus is *merged* when two or more
    true nuclei each have more than ``fraction`` of their area inside it (touching nuclei
    called one). Both are 0 for a perfect prediction.
    """
    intersection, true_area, pred_area = _overlaps(truth, prediction)
    if intersection.size == 0:
        return 0, 0
    pieces = (intersection > fraction * pred_area).sum(axis=1)
    joined = (intersection > fraction * true_area).sum(axis=0)
    return int((pieces >= 2).sum()), int((joined >= 2).sum())


def _overlaps(truth: np.ndarray, prediction: np.ndarray):
    """(intersection, true area (n, 1), predicted area (1, m)) in pixels, float64, between
    every true nucleus (rows) and every predicted one (columns)."""
    true_ids, true_index = label_ids(truth)
    pred_ids, pred_index = label_ids(prediction)
    counts = np.bincount(
        true_index * len(pred_ids) + pred_index,
        minlength=len(true_ids) * len(pred_ids),
    ).reshape(len(true_ids), -1)
    keep_true, keep_pred = true_ids != 0, pred_ids != 0
    intersection = counts[np.ix_(keep_true, keep_pred)].astype(np.float64)
    true_area = counts.sum(axis=1)[keep_true][:, None].astype(np.float64)
    pred_area = counts.sum(axis=0)[keep_pred][None, :].astype(np.float64)
    return intersection, true_area, pred_area


def match_counts(iou: np.ndarray, threshold: float) -> tuple[int, int, int]:
    """(TP, FP, FN) when a match needs IoU > ``threshold`` (>= 0.5 makes matches unique)."""
    if threshold < 0.5:
        raise ValueError("thresholds below 0.5 allow one nucleus to match several")
    true_positives = int((iou > threshold).sum())
    n_true, n_pred = iou.shape
    return true_positives, n_pred - true_positives, n_true - true_positives


def dsb_score(truth: np.ndarray, prediction: np.ndarray) -> float:
    """The 2018 Data Science Bowl score of one image: the mean over IoU thresholds
    0.50, 0.55, ..., 0.95 of TP / (TP + FP + FN). An image with no nucleus in truth and
    prediction scores 1; nuclei in only one of them score 0."""
    iou = instance_iou(truth, prediction)
    if iou.size == 0:
        return 1.0 if iou.shape == (0, 0) else 0.0
    scores = []
    for threshold in DSB_THRESHOLDS:
        tp, fp, fn = match_counts(iou, threshold)
        scores.append(tp / (tp + fp + fn))
    return float(np.mean(scores))


def detection_scores(truth: np.ndarray, prediction: np.ndarray, threshold: float = 0.5) -> dict:
    """Precision, recall and F1 of nucleus detection at one IoU threshold, with the counts."""
    tp, fp, fn = match_counts(instance_iou(truth, prediction), threshold)
    precision = tp / (tp + fp) if tp + fp else float(fn == 0)
    recall = tp / (tp + fn) if tp + fn else float(fp == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def matched_area_errors(
    truth: np.ndarray, prediction: np.ndarray, threshold: float = 0.5
) -> np.ndarray:
    """Signed relative area error ``(predicted - true) / true`` of every true nucleus matched
    at IoU > ``threshold`` (one value per match; empty when nothing matches). Negative means
    the predicted outline is too tight, positive too loose."""
    if threshold < 0.5:
        raise ValueError("thresholds below 0.5 allow one nucleus to match several")
    iou = instance_iou(truth, prediction)
    rows, columns = np.nonzero(iou > threshold)
    if rows.size == 0:
        return np.zeros(0, dtype=np.float64)
    true_ids, true_index = label_ids(truth)
    pred_ids, pred_index = label_ids(prediction)
    true_area = np.bincount(true_index)[true_ids != 0]
    pred_area = np.bincount(pred_index)[pred_ids != 0]
    return (pred_area[columns] - true_area[rows]) / true_area[rows].astype(np.float64)
