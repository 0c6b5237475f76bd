"""Nodes of the ``inference`` pipeline: a folder of the user's own images -> nuclei."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import keras

import nucleus_segmentation
from nucleus_segmentation.datasets.image_folder import ImageFolder
from nucleus_segmentation.errors import ParameterError
from nucleus_segmentation.imaging.overlay import contour_colour
from nucleus_segmentation.inference import FolderSegmentation, ImageWork, ModelFile
from nucleus_segmentation.model.precision import resolve_precision
from nucleus_segmentation.parallel import runs_in_process, threads_per_worker
from nucleus_segmentation.segment import (
    TUNED_ON,
    SegmentationSettings,
    check_model_preprocessing,
    check_model_separation,
    check_separation_plan,
    for_segmentation,
    model_classes,
    warn_if_tuned_otherwise,
)

logger = logging.getLogger(__name__)


def segment_images(
    images: ImageFolder,
    model: keras.Model,
    postprocessing: Mapping[str, Any],
    preprocessing: Mapping[str, Any],
    segmentation: Mapping[str, Any],
    params: Mapping[str, Any],
) -> FolderSegmentation:
    """Segment every image of the folder with
    :func:`nucleus_segmentation.segment.segment_image`, the path evaluation scores.

    ``preprocessing`` and ``segmentation`` (scale policy, tiling, test-time variants) are
    those the model was trained and evaluated with; ``postprocessing`` is the separation
    tuned by evaluation (settings per modality, where it has them, go to each image by its
    colour test); ``params``: ``overlay`` (contour colour and mode) and ``n_workers``.
    Every setting is checked here, before any image is read.

    Returns:
        A lazy :class:`~nucleus_segmentation.inference.FolderSegmentation`: the images are
        segmented one at a time (in ``n_workers`` processes, or on the Dask cluster of
        ``params:parallel``) while ``inference_output`` writes each result, so memory stays
        flat for a folder of any size. A file that cannot be decoded is skipped and
        reported; a folder without a single usable image stops the run, naming it.
    """
    settings = SegmentationSettings.from_params(segmentation)
    separation = check_separation_plan(postprocessing, "instance_postprocessing")
    warn_if_tuned_otherwise(postprocessing, settings, "instance_postprocessing")
    check_model_separation(model, separation)
    check_model_preprocessing(model, preprocessing)
    style = params["overlay"]
    colour = contour_colour(style["colour"], style["mode"]).tolist()
    workers = params["n_workers"]
    in_process = runs_in_process(workers, len(images))
    source = getattr(model, "loaded_from", None)
    if not in_process and source is None:
        raise ParameterError(
            "inference.n_workers > 1 or parallel.backend: dask needs the model's .keras file "
            "(trained_model from the catalog) for the workers to load"
        )
    target = (
        for_segmentation(model, settings)
        if in_process
        else ModelFile(str(source.filepath), threads_per_worker(workers), settings.precision)
    )
    work = ImageWork(target, dict(preprocessing), settings, separation, colour, str(style["mode"]))
    recorded = {TUNED_ON: postprocessing[TUNED_ON]} if TUNED_ON in postprocessing else {}
    about = _about(images, model, preprocessing, settings, {**separation, **recorded})
    return FolderSegmentation(images.path, dict(images.files), work, workers, about)


def _about(
    images: ImageFolder,
    model: keras.Model,
    preprocessing: Mapping[str, Any],
    settings: SegmentationSettings,
    separation: Mapping[str, Any],
) -> dict[str, Any]:
    """What produced this result: input folder, model file and version, all settings."""
    source = getattr(model, "loaded_from", None)
    return {
        "pipeline": "inference",
        "software": {
            "nucleus_segmentation": nucleus_segmentation.__version__,
            "keras": keras.__version__,
            "keras_backend": keras.config.backend(),
        },
        "input_folder": str(images.path.resolve()),
        "model": {
            "file": getattr(source, "filepath", None),
            "version": getattr(source, "version", None),
            "sha256": getattr(source, "sha256", None),
            "name": getattr(model, "name", type(model).__name__),
            "precision": resolve_precision(settings.precision),
            "classes": model_classes(model),
        },
        "parameters": {
            "preprocessing": dict(preprocessing),
            "segmentation": settings.to_params(),
            "instance_postprocessing": dict(separation),
        },
    }
