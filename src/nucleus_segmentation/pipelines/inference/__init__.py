"""Segmentation of a folder of one's own images with the trained model."""

from nucleus_segmentation.pipelines.inference.pipeline import create_pipeline

__all__ = ["create_pipeline"]
