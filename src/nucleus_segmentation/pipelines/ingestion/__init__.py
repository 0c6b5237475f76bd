"""Raw DSB ingestion: decode, merge masks into label maps, describe, split."""

from nucleus_segmentation.pipelines.ingestion.pipeline import create_pipeline

__all__ = ["create_pipeline"]
