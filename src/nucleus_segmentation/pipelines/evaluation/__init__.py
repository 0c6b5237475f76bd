"""Evaluation of the trained model on the held-out test split."""

from nucleus_segmentation.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
