"""Pixel-weighted softmax cross-entropy (paper 2.3) with an optional soft Dice term.

``E = -sum_x w(x) log p_k(x)(x)``: ``p`` are the softmax probabilities the model outputs,
``k(x)`` the true class of pixel ``x`` and ``w(x)`` the weight of that class, set by median
frequency balancing (``median_frequency_class_weights``) so that the few nucleus pixels
count as much as the many background ones.

Label conventions: ``y_true`` is either sparse, ``(B, H, W)`` or ``(B, H, W, 1)`` integer
class ids in ``0..K-1`` (any numeric dtype), or one-hot ``(B, H, W, K)``; ``y_pred`` is
``(B, H, W, K)`` float probabilities summing to 1 over the last axis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import keras
import numpy as np
from keras import ops

PACKAGE = "nucleus_segmentation"


def one_hot_labels(y_true, num_classes: int):
    """Sparse ``(B, H, W[, 1])`` or one-hot ``(B, H, W, K)`` labels -> float one-hot."""
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == 4 and y_true.shape[-1] == num_classes:
        return ops.cast(y_true, "float32")
    if len(y_true.shape) == 4:
        y_true = ops.squeeze(y_true, axis=-1)
    return ops.one_hot(ops.cast(y_true, "int32"), num_classes, dtype="float32")


def weighted_cross_entropy(
    y_true, y_pred, class_weights: Sequence[float] | None = None, epsilon: float = 1e-7
):
    """Per-pixel ``-w(k) log p_k`` for the true class ``k``: ``(B, H, W)`` float32, >= 0.

    Probabilities are clipped to ``[epsilon, 1]`` so a confidently wrong pixel costs
    ``-log(epsilon)`` (16.1 for 1e-7) instead of infinity. ``class_weights`` (length K)
    default to 1.
    """
    y_pred = ops.cast(y_pred, "float32")
    num_classes = y_pred.shape[-1]
    target = one_hot_labels(y_true, num_classes)
    log_p = ops.log(ops.clip(y_pred, epsilon, 1.0))
    if class_weights is not None:
        target = target * ops.convert_to_tensor(np.asarray(class_weights, "float32"))
    return -ops.sum(target * log_p, axis=-1)


def soft_dice_loss(y_true, y_pred, smooth: float = 1.0):
    """Per-image ``1 - mean over foreground classes of soft Dice``: ``(B,)`` float32 in [0, 1].

    Dice ``(2 sum p y + smooth) / (sum p + sum y + smooth)`` per image and class, over the
    classes 1..K-1 (background would dominate and is already counted by the cross-entropy).
    ``smooth`` guards empty images: no nucleus predicted on an image without nuclei costs 0.
    """
    y_pred = ops.cast(y_pred, "float32")
    target = one_hot_labels(y_true, y_pred.shape[-1])[..., 1:]
    probs = y_pred[..., 1:]
    intersection = ops.sum(target * probs, axis=(1, 2))
    total = ops.sum(target, axis=(1, 2)) + ops.sum(probs, axis=(1, 2))
    dice = (2.0 * intersection + smooth) / (total + smooth)
    return 1.0 - ops.mean(dice, axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PixelWeightedCrossEntropy(keras.losses.Loss):
    """Class-weighted softmax cross-entropy plus ``dice_weight`` x soft Dice loss.

    ``call`` returns per-pixel values ``(B, H, W)``: the weighted cross-entropy plus the
    image's Dice loss spread evenly over its pixels, so the default reduction (mean over
    batch and pixels) gives ``mean CE + dice_weight * mean Dice`` and a per-pixel
    ``sample_weight`` ``(B, H, W)`` (e.g. U-Net border weights) can still be passed to ``fit``.

    Args:
        class_weights: K floats, e.g. from ``median_frequency_class_weights``; None = 1.
        dice_weight: weight of the soft Dice term; 0 (default) is the paper's loss.
        epsilon: probability clip of the cross-entropy.
        smooth: Dice smoothing.
    """

    def __init__(
        self,
        class_weights: Sequence[float] | None = None,
        dice_weight: float = 0.0,
        epsilon: float = 1e-7,
        smooth: float = 1.0,
        name: str = "pixel_weighted_cross_entropy",
        reduction: str = "sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        if self.class_weights is not None and min(self.class_weights) < 0:
            raise ValueError(f"class_weights must be >= 0, got {self.class_weights}")
        if dice_weight < 0:
            raise ValueError(f"dice_weight must be >= 0, got {dice_weight}")
        self.dice_weight = float(dice_weight)
        self.epsilon = float(epsilon)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        if self.class_weights is not None and len(self.class_weights) != y_pred.shape[-1]:
            raise ValueError(
                f"{len(self.class_weights)} class weights for {y_pred.shape[-1]} classes"
            )
        loss = weighted_cross_entropy(y_true, y_pred, self.class_weights, self.epsilon)
        if self.dice_weight > 0:
            dice = soft_dice_loss(y_true, y_pred, self.smooth)
            loss = loss + self.dice_weight * dice[:, None, None]
        return loss

    def get_config(self):
        config = super().get_config()
        config.update(
            class_weights=self.class_weights,
            dice_weight=self.dice_weight,
            epsilon=self.epsilon,
            smooth=self.smooth,
        )
        return config


def median_frequency_class_weights(masks: Iterable[np.ndarray], num_classes: int = 2) -> np.ndarray:
    """Median frequency balancing (Eigen & Fergus 2015): ``w_c = median(freq) / freq_c``.

    ``freq_c`` is the number of pixels of class ``c`` divided by the number of pixels of
    the images in which ``c`` occurs, so a class that is rare overall but large where present
    is not over-weighted. The median is taken over the classes that occur.

    Args:
        masks: class-id maps (any shape, e.g. HxW uint8 {0, 1}); sizes may differ.
        num_classes: K; every value must lie in ``0..K-1``.

    Returns:
        ``(K,)`` float64 weights; 0 for a class that never occurs.

    Raises:
        ValueError: no masks, or a value outside ``0..K-1``.
    """
    class_pixels = np.zeros(num_classes, dtype=np.int64)
    image_pixels = np.zeros(num_classes, dtype=np.int64)
    seen = False
    for mask in masks:
        values = np.asarray(mask).ravel()
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"mask values must lie in 0..{num_classes - 1}")
        counts = np.bincount(values.astype(np.int64), minlength=num_classes)
        class_pixels += counts
        image_pixels += np.where(counts > 0, values.size, 0)
        seen = True
    if not seen:
        raise ValueError("median_frequency_class_weights needs at least one mask")
    present = class_pixels > 0
    if not present.any():
        raise ValueError("all masks are empty")
    frequency = np.zeros(num_classes, dtype=np.float64)
    frequency[present] = class_pixels[present] / image_pixels[present]
    weights = np.zeros(num_classes, dtype=np.float64)
    weights[present] = np.median(frequency[present]) / frequency[present]
    return weights
