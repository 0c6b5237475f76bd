"""``calibration``: a few of the user's own labelled images (DSB layout) + trained model ->
the separation and outline tuned on them, and a before/after report.

``kedro run --pipeline calibration --params calibration_input=<folder>``; not part of
``__default__``. The images are read and their masks merged exactly as ingestion does, each is
segmented by the path inference runs, the outline level (``calibration.tune: outline``, the
default) or evaluation's whole search (``tune: all``, ``params:evaluation``) is fitted on them
(per modality where the separation in use holds settings per modality) with the separation
in use as one more candidate, and the result is written as a new version of
``instance_postprocessing``: the separation the next ``inference`` run uses. The
one in use is read by the node that writes the new one (as ``instance_postprocessing_in_use``,
the same file), so it is the previous version, not the new one.
"""

from kedro.pipeline import Pipeline, node, pipeline

from nucleus_segmentation.pipelines.calibration.nodes import (
    calibrate_separation,
    predict_calibration_images,
    report_calibration,
)
from nucleus_segmentation.pipelines.ingestion.nodes import ingest_dsb_images


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                ingest_dsb_images,
                inputs=["calibration_raw", "params:ingestion"],
                outputs=[
                    "calibration_images",
                    "calibration_metadata",
                    "calibration_rejected_table",
                ],
                name="ingest_calibration_images",
            ),
            node(
                predict_calibration_images,
                inputs=[
                    "trained_model",
                    "calibration_images",
                    "calibration_metadata",
                    "params:preprocessing",
                    "params:segmentation",
                    "params:evaluation",
                    "params:calibration",
                ],
                outputs="calibration_probabilities",
                name="predict_calibration_images",
            ),
            node(
                calibrate_separation,
                inputs=[
                    "calibration_probabilities",
                    "calibration_images",
                    "instance_postprocessing_in_use",
                    "params:evaluation",
                    "params:calibration",
                    "params:segmentation",
                ],
                outputs=[
                    "instance_postprocessing",
                    "calibration_search_table",
                    "separation_before_calibration",
                ],
                name="calibrate_separation",
            ),
            node(
                report_calibration,
                inputs=[
                    "calibration_probabilities",
                    "calibration_images",
                    "calibration_metadata",
                    "separation_before_calibration",
                    "instance_postprocessing",
                ],
                outputs="calibration_report_table",
                name="report_calibration",
            ),
        ],
        tags="calibration",  # kedro-viz tag filter, `kedro run --tags calibration`
    )
