"""Separation and outline calibrated on a handful of the user's own labelled images."""

from nucleus_segmentation.pipelines.calibration.pipeline import create_pipeline

__all__ = ["create_pipeline"]
