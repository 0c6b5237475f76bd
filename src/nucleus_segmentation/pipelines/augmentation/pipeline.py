"""``augmentation``: preprocessed training images -> stored augmented copies."""

from kedro.pipeline import Pipeline, node, pipeline

from nucleus_segmentation.pipelines.augmentation.nodes import augment_training_images


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                augment_training_images,
                inputs=[
                    "preprocessed_images",
                    "data_split",
                    "params:augmentation",
                    # raw colour and the preprocessing, for augmentation.stain_jitter only
                    "ingested_images",
                    "params:preprocessing",
                    "params:segmentation",
                ],
                outputs="augmented_images",
                name="augment_training_images",
            ),
        ],
        tags="augmentation",  # kedro-viz tag filter, `kedro run --tags augmentation`
    )
