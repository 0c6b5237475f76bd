"""The attention U-Net in Keras 3: layers, builder, losses and metrics. No Kedro, no ``tf.*``.

Images are ``(B, H, W, 1)`` (3 for colour input) float in [0, 1] with H and W multiples of
16; the model outputs ``(B, H, W, num_classes)`` float32 softmax probabilities. Importing this
package registers the custom layers, loss and metric for
``keras.saving.load_model(path, safe_mode=True)``.
"""

from nucleus_segmentation.model.layers import (
    ASPP,
    AdaptiveAveragePooling2D,
    AttentionFusion,
    ChannelAttention,
    ChannelExpansion,
    LocalResponseNormalization,
)
from nucleus_segmentation.model.losses import (
    PixelWeightedCrossEntropy,
    median_frequency_class_weights,
    soft_dice_loss,
    weighted_cross_entropy,
)
from nucleus_segmentation.model.metrics import (
    confusion_matrix,
    evaluate_segmentation,
    mean_iou,
    mean_pixel_accuracy,
    nucleus_iou,
    pixel_accuracy,
    scores_from_confusion,
)
from nucleus_segmentation.model.unet import UNetConfig, build_attention_unet, model_summary_stats

__all__ = [
    "ASPP",
    "AdaptiveAveragePooling2D",
    "AttentionFusion",
    "ChannelAttention",
    "ChannelExpansion",
    "LocalResponseNormalization",
    "PixelWeightedCrossEntropy",
    "UNetConfig",
    "build_attention_unet",
    "confusion_matrix",
    "evaluate_segmentation",
    "mean_iou",
    "mean_pixel_accuracy",
    "median_frequency_class_weights",
    "model_summary_stats",
    "nucleus_iou",
    "pixel_accuracy",
    "scores_from_confusion",
    "soft_dice_loss",
    "weighted_cross_entropy",
]
