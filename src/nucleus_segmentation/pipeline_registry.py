"""Project pipelines: one per folder under ``pipelines/`` (stages and composites)."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    """Every pipeline folder by name; ``__default__`` is data processing, training and
    evaluation.

    Kedro only imports the pipelines a run asks for, so composites are folders too
    (``pipelines/data_processing``) rather than sums built here.
    """
    pipelines = find_pipelines(raise_errors=True)
    stages = ("data_processing", "training", "evaluation")
    if set(stages) <= set(pipelines):
        pipelines["__default__"] = sum((pipelines[name] for name in stages), Pipeline([]))
    return pipelines
