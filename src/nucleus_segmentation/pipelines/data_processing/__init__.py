"""``data_processing``: ingestion, preprocessing and augmentation chained.

A folder of its own (rather than a sum in ``pipeline_registry``) so that Kedro's selective
pipeline discovery finds it by name when a user types ``--pipeline data_processing``.
"""

from nucleus_segmentation.pipelines.data_processing.pipeline import create_pipeline

__all__ = ["create_pipeline"]
