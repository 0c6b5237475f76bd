"""Project pipelines: one per stage, plus the composites users type."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    """Stage pipelines by folder name, plus ``data_processing`` and ``__default__``."""
    pipelines = find_pipelines(raise_errors=True)
    pipelines["data_processing"] = (
        pipelines["ingestion"] + pipelines["preprocessing"] + pipelines["augmentation"]
    )
    pipelines["__default__"] = pipelines["data_processing"]
    return pipelines
