"""``evaluation``: trained model + test split -> per-image and per-modality scores."""

from kedro.pipeline import Pipeline, node, pipeline

from nucleus_segmentation.pipelines.evaluation.nodes import (
    evaluate_test_predictions,
    predict_test_images,
)


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                predict_test_images,
                inputs=["trained_model", "preprocessed_images", "data_split", "params:evaluation"],
                outputs="test_probabilities",
                name="predict_test_images",
            ),
            node(
                evaluate_test_predictions,
                inputs=[
                    "test_probabilities",
                    "preprocessed_images",
                    "data_split",
                    "params:evaluation",
                ],
                outputs=["evaluation_per_image", "evaluation_per_modality", "test_metrics"],
                name="evaluate_test_predictions",
            ),
        ]
    )
