"""``inference``: a folder of images + trained model -> masks, label maps, overlays, tables.

``kedro run --pipeline inference --params inference_input=<folder>,inference_output=<folder>``;
not part of ``__default__``.
"""

from kedro.pipeline import Pipeline, node, pipeline

from nucleus_segmentation.pipelines.inference.nodes import (
    assemble_inference_output,
    draw_overlays,
    encode_submission,
    segment_images,
    tabulate_nuclei,
)


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
                outputs=["inference_labels", "inference_report", "inference_manifest"],
                name="segment_images",
            ),
            node(
                tabulate_nuclei,
                inputs=["inference_images", "inference_labels"],
                outputs="inference_nuclei",
                name="tabulate_nuclei",
            ),
            node(
                encode_submission,
                inputs="inference_labels",
                outputs="inference_submission",
                name="encode_submission",
            ),
            node(
                draw_overlays,
                inputs=["inference_images", "inference_labels", "params:inference"],
                outputs="inference_overlays",
                name="draw_overlays",
            ),
            node(
                assemble_inference_output,
                inputs=[
                    "inference_labels",
                    "inference_overlays",
                    "inference_nuclei",
                    "inference_submission",
                    "inference_report",
                    "inference_manifest",
                ],
                outputs="inference_output",
                name="assemble_inference_output",
            ),
        ],
        tags="inference",  # kedro-viz tag filter, `kedro run --tags inference`
    )
