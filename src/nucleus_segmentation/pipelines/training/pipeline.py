"""``training``: preprocessed/augmented data -> trained model, histories, curves (MLflow)."""

from kedro.pipeline import Pipeline, node, pipeline

from nucleus_segmentation.pipelines.training.nodes import (
    compute_class_weights,
    describe_training_data,
    log_model_to_mlflow,
    plot_training_curves,
    train_segmentation_model,
)


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                compute_class_weights,
                inputs=["preprocessed_images", "data_split", "params:training"],
                outputs="class_weights",
                name="compute_class_weights",
            ),
            node(
                describe_training_data,
                inputs=[
                    "augmented_images",
                    "data_split",
                    "params:training",
                    "params:augmentation",
                ],
                outputs="training_data_size",
                name="describe_training_data",
            ),
            node(
                train_segmentation_model,
                inputs=[
                    "augmented_images",
                    "preprocessed_images",
                    "ingested_images",
                    "data_split",
                    "class_weights",
                    "params:training",
                    "params:augmentation",
                    "params:preprocessing",
                    "params:segmentation",
                ],
                outputs=[
                    "trained_model",
                    "training_history",
                    "training_metric_history",
                    "best_validation_metrics",
                ],
                name="train_segmentation_model",
            ),
            node(
                log_model_to_mlflow,
                inputs="trained_model",
                outputs="mlflow_model",
                name="log_model_to_mlflow",
            ),
            node(
                plot_training_curves,
                inputs="training_history",
                outputs="training_curves",
                name="plot_training_curves",
            ),
        ],
        tags="training",  # kedro-viz tag filter, `kedro run --tags training`
    )
