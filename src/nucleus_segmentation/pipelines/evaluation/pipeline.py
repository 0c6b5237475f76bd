"""``evaluation``: trained model + held-out raw images -> tuned separation, scores, comparison.

Every prediction goes through :mod:`nucleus_segmentation.segment` (the path inference runs),
every score is taken on the images' own grid against their own labels.
"""

from kedro.pipeline import Pipeline, node, pipeline

from nucleus_segmentation.pipelines.evaluation.nodes import (
    collect_scored_labels,
    compare_methods,
    evaluate_test_predictions,
    plot_comparison_panels,
    predict_test_images,
    predict_validation_images,
    segment_test_with_baselines,
    separate_test_instances,
    tune_instance_separation,
)

_DATA = ["ingested_images", "data_split"]
_PATH = ["params:preprocessing", "params:segmentation"]


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                predict_validation_images,
                inputs=["trained_model", *_DATA, *_PATH],
                outputs="validation_probabilities",
                name="predict_validation_images",
            ),
            node(
                tune_instance_separation,
                inputs=[
                    "validation_probabilities",
                    "ingested_images",
                    "params:evaluation",
                    "params:ingestion.modality",
                    "params:segmentation",
                ],
                outputs=["instance_postprocessing", "separation_search_table"],
                name="tune_instance_separation",
            ),
            node(
                predict_test_images,
                inputs=["trained_model", *_DATA, *_PATH, "params:evaluation"],
                outputs="test_probabilities",
                name="predict_test_images",
            ),
            node(
                segment_test_with_baselines,
                inputs=[*_DATA, "baseline_model", *_PATH, "params:evaluation"],
                outputs="baseline_probabilities",
                name="segment_test_with_baselines",
            ),
            node(
                separate_test_instances,
                inputs=[
                    "test_probabilities",
                    "baseline_probabilities",
                    "instance_postprocessing",
                    "ingested_images",
                    "params:evaluation",
                ],
                outputs="test_instances",
                name="separate_test_instances",
            ),
            node(
                collect_scored_labels,
                inputs="test_instances",
                outputs="scored_test_labels",
                name="collect_scored_labels",
            ),
            node(
                evaluate_test_predictions,
                inputs=["test_instances", *_DATA, "params:evaluation", "params:segmentation"],
                outputs=[
                    "evaluation_per_image_table",
                    "evaluation_per_modality_table",
                    "evaluation_per_acquisition_table",
                    "test_metrics",
                    "tta_comparison_table",
                ],
                name="evaluate_test_predictions",
            ),
            node(
                compare_methods,
                inputs=["test_instances", *_DATA, "params:evaluation"],
                outputs=[
                    "method_comparison_table",
                    "method_comparison_markdown",
                    "comparison_metrics",
                ],
                name="compare_methods",
            ),
            node(
                plot_comparison_panels,
                inputs=["test_instances", *_DATA, "params:evaluation"],
                outputs="comparison_panels",
                name="plot_comparison_panels",
            ),
        ],
        tags="evaluation",  # kedro-viz tag filter, `kedro run --tags evaluation`
    )
