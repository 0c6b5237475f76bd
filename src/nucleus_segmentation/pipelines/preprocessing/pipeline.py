"""``preprocessing``: ingested images -> network-ready gray images and resized label maps."""

from kedro.pipeline import Pipeline, node, pipeline

from nucleus_segmentation.pipelines.preprocessing.nodes import preprocess_images


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                preprocess_images,
                inputs=[
                    "ingested_images",
                    "image_metadata",
                    "params:preprocessing",
                    "params:segmentation",
                ],
                outputs="preprocessed_images",
                name="preprocess_images",
            ),
        ],
        tags="preprocessing",  # kedro-viz tag filter, `kedro run --tags preprocessing`
    )
