"""``inference``: a folder of images + trained model -> masks, label maps, overlays, tables.

``kedro run --pipeline inference --params inference_input=<folder>,inference_output=<folder>``;
not part of ``__default__``. One node: the images stream from the folder through the
segmentation path into ``inference_output``, one at a time (``segment_images``).
"""

from kedro.pipeline import Pipeline, node, pipeline

from nucleus_segmentation.pipelines.inference.nodes import segment_images


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                segment_images,
                inputs=[
                    "inference_images",
                    "trained_model",
                    "instance_postprocessing",
                    "params:preprocessing",
                    "params:segmentation",
                    "params:inference",
                ],
                outputs="inference_output",
                name="segment_images",
            ),
        ],
        tags="inference",  # kedro-viz tag filter, `kedro run --tags inference`
    )
