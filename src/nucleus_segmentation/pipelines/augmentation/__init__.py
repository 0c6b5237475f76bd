"""Offline augmentation of the training split (paper 2.1, 3.2.2)."""

from nucleus_segmentation.pipelines.augmentation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
