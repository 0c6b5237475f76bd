"""The data stages, in the order data flows."""

from kedro.pipeline import Pipeline

from nucleus_segmentation.pipelines import augmentation, ingestion, preprocessing


def create_pipeline(**kwargs) -> Pipeline:
    return (
        ingestion.create_pipeline()
        + preprocessing.create_pipeline()
        + augmentation.create_pipeline()
    )
