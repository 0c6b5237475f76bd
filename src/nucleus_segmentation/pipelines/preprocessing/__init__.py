"""Preprocessing: grayscale, optional inversion, resize, histogram equalization, smoothing."""

from nucleus_segmentation.pipelines.preprocessing.pipeline import create_pipeline

__all__ = ["create_pipeline"]
