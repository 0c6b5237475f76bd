"""``ingestion``: raw DSB zip/folder -> images, label maps, masks, metadata, split."""

from kedro.pipeline import Pipeline, node, pipeline

from nucleus_segmentation.pipelines.ingestion.nodes import (
    encode_instances_as_rle,
    ingest_dsb_images,
    split_by_acquisition,
)


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                ingest_dsb_images,
                inputs=["dsb_raw", "params:ingestion"],
                outputs=["ingested_images", "image_metadata", "rejected_items"],
                name="ingest_dsb_images",
            ),
            node(
                encode_instances_as_rle,
                inputs=["ingested_images", "image_metadata"],
                outputs="instance_labels_rle",
                name="encode_instances_as_rle",
            ),
            node(
                split_by_acquisition,
                inputs=["image_metadata", "params:split"],
                outputs="data_split",
                name="split_by_acquisition",
            ),
        ],
        tags="ingestion",  # kedro-viz tag filter, `kedro run --tags ingestion`
    )
