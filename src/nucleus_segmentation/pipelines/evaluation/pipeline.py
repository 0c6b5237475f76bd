"""``evaluation``: trained model + held-out data -> tuned separation, scores, comparison."""

from kedro.pipeline import Pipeline, node, pipeline

from nucleus_segmentation.pipelines.evaluation.nodes import (
    compare_methods,
    evaluate_test_predictions,
    plot_comparison_panels,
    predict_test_images,
    predict_validation_images,
    segment_test_with_baselines,
    tune_instance_separation,
)

_DATA = ["preprocessed_images", "data_split"]


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                predict_validation_images,
                inputs=["trained_model", *_DATA, "params:evaluation"],
                outputs="validation_probabilities",
                name="predict_validation_images",
            ),
            node(
                tune_instance_separation,
                inputs=["validation_probabilities", "preprocessed_images", "params:evaluation"],
                outputs=["instance_postprocessing", "separation_search_table"],
                name="tune_instance_separation",
            ),
            node(
                predict_test_images,
                inputs=["trained_model", *_DATA, "params:evaluation"],
                outputs="test_probabilities",
                name="predict_test_images",
            ),
            node(
                evaluate_test_predictions,
                inputs=[
                    "test_probabilities",
                    *_DATA,
                    "instance_postprocessing",
                    "params:evaluation",
                ],
                outputs=[
                    "evaluation_per_image_table",
                    "evaluation_per_modality_table",
                    "test_metrics",
                    "tta_comparison_table",
                ],
                name="evaluate_test_predictions",
            ),
            node(
                segment_test_with_baselines,
                inputs=[*_DATA, "trained_model", "baseline_model", "params:evaluation"],
                outputs="baseline_probabilities",
                name="segment_test_with_baselines",
            ),
            node(
                compare_methods,
                inputs=[
                    "baseline_probabilities",
                    "test_probabilities",
                    *_DATA,
                    "instance_postprocessing",
                    "params:evaluation",
                ],
                outputs=[
                    "method_comparison_table",
                    "method_comparison_markdown",
                    "comparison_metrics",
                ],
                name="compare_methods",
            ),
            node(
                plot_comparison_panels,
                inputs=[
                    "baseline_probabilities",
                    "test_probabilities",
                    *_DATA,
                    "instance_postprocessing",
                    "params:evaluation",
                ],
                outputs="comparison_panels",
                name="plot_comparison_panels",
            ),
        ]
    )
