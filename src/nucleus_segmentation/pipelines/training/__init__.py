"""Training of the attention U-Net, tracked in MLflow through the catalog."""

from nucleus_segmentation.pipelines.training.pipeline import create_pipeline

__all__ = ["create_pipeline"]
