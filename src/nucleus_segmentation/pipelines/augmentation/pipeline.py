"""``augmentation``: preprocessed training images -> stored augmented copies."""

from kedro.pipeline import Pipeline, node, pipeline

from nucleus_segmentation.pipelines.augmentation.nodes import augment_training_images


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                augment_training_images,
                inputs=["preprocessed_images", "data_split", "params:augmentation"],
                outputs="augmented_images",
                name="augment_training_images",
            ),
        ],
        tags="augmentation",  # kedro-viz tag filter, `kedro run --tags augmentation`
    )
