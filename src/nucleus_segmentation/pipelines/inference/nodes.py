"""Nodes of the ``inference`` pipeline: a folder of one's own images -> nucleus masks, label
maps, contour overlays, a table of nuclei and a Kaggle-format submission."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import pandas as pd

import nucleus_segmentation
from nucleus_segmentation.datasets.image_folder import ImageFolder
from nucleus_segmentation.errors import DataProblem
from nucleus_segmentation.imaging.codec import InvalidImageError
from nucleus_segmentation.imaging.measure import NUCLEUS_COLUMNS, measure_nuclei
from nucleus_segmentation.imaging.overlay import contour_colour, draw_contours, mask_image
from nucleus_segmentation.imaging.rle import labels_to_rles
from nucleus_segmentation.progress import track
from nucleus_segmentation.segment import SegmentationSettings, check_separation, segment_image

logger = logging.getLogger(__name__)
REPORT_COLUMNS = ["file", "problem"]


def segment_images(
    images: ImageFolder,
    model: keras.Model,
    postprocessing: Mapping[str, Any],
    preprocessing: Mapping[str, Any],
    segmentation: Mapping[str, Any],
    params: Mapping[str, Any],
) -> tuple[dict[str, np.ndarray], pd.DataFrame, dict[str, Any]]:
    """Segment every image of the folder, one image at a time, with
    :func:`nucleus_segmentation.segment.segment_image`: the path evaluation scores.

    ``preprocessing`` and ``segmentation`` (scale policy, tiling, test-time variants) are
    those the model was trained and evaluated with; ``postprocessing`` is the separation
    tuned by evaluation. A file that cannot be decoded (empty, corrupt) is skipped and
    reported. ``params`` (``overlay``) is checked before any image is read.

    Returns:
        ``(labels, report, manifest)``: ``{image id: HxW uint16 label map}`` at each image's
        own size; the skipped files (columns ``file``, ``problem``); and a JSON-able record
        of the input folder, the model (file, version, digest) and every setting used.

    Raises:
        DataProblem: no usable image in the folder at all.
    """
    settings = SegmentationSettings.from_params(segmentation)
    separation = check_separation(postprocessing, "instance_postprocessing")
    contour_colour(params["overlay"]["colour"], params["overlay"]["mode"])
    labels: dict[str, np.ndarray] = {}
    problems: list[dict[str, str]] = []
    for image_id, load in track(images.items(), "segmenting images", len(images)):
        try:
            image = load()
        except InvalidImageError as exc:
            logger.warning("Skipping %s: %s", exc.name, exc.problem)
            problems.append({"file": exc.name, "problem": exc.problem})
            continue
        started = time.perf_counter()
        labels[image_id] = segment_image(model, image, preprocessing, settings, separation)
        logger.info(
            "Segmented %s (%dx%d): %d nuclei in %.2f s",
            images.files[image_id],
            image.shape[0],
            image.shape[1],
            int(labels[image_id].max()),
            time.perf_counter() - started,
        )
    if not labels:
        found = f"{len(problems)} image file(s), none readable" if problems else "no image file"
        raise DataProblem(
            f"{images.path}: no usable image ({found}; PNG, TIFF or JPEG, 8- or 16-bit)"
            + "".join(f"\n  {p['file']}: {p['problem']}" for p in problems[:10])
        )
    report = pd.DataFrame(problems, columns=REPORT_COLUMNS)
    manifest = _manifest(images, model, labels, problems, preprocessing, settings, separation)
    return labels, report, manifest


def tabulate_nuclei(images: ImageFolder, labels: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row per nucleus of every segmented image: ``image`` (the image id), then the
    columns of :func:`measure_nuclei` (area, centroid, bounding box in pixels; mean
    intensity on the original image's gray values, in its own units)."""
    tables = [
        measure_nuclei(label_map, images.read(image_id)).assign(image=image_id)
        for image_id, label_map in labels.items()
    ]
    columns = ["image", *NUCLEUS_COLUMNS]
    if not tables:
        return pd.DataFrame(columns=columns)
    return pd.concat(tables, ignore_index=True)[columns]


def encode_submission(labels: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Kaggle DSB submission: ``ImageId,EncodedPixels``, one row per nucleus (run-length
    encoded, pixels numbered top to bottom then left to right from 1); an image without
    nuclei gets one row with empty ``EncodedPixels``."""
    rows = [
        (image_id, rle)
        for image_id, label_map in labels.items()
        for rle in (labels_to_rles(label_map) or [""])
    ]
    return pd.DataFrame(rows, columns=["ImageId", "EncodedPixels"])


def draw_overlays(
    images: ImageFolder, labels: Mapping[str, np.ndarray], params: Mapping[str, Any]
) -> dict[str, Callable[[], np.ndarray]]:
    """``{image id: function -> HxWx3 uint8 RGB}``: the original image (8-bit, alpha dropped)
    with the nucleus contours in ``params["overlay"]`` ``colour`` and ``mode``.

    Drawn lazily, one image at a time while the output is written, so the overlays of a
    whole folder are never in memory together.
    """
    style = params["overlay"]
    colour = contour_colour(style["colour"], style["mode"]).tolist()
    return {
        image_id: functools.partial(
            _overlay, images, image_id, label_map, colour, str(style["mode"])
        )
        for image_id, label_map in labels.items()
    }


def assemble_inference_output(
    labels: Mapping[str, np.ndarray],
    overlays: Mapping[str, Callable[[], np.ndarray]],
    nuclei: pd.DataFrame,
    submission: pd.DataFrame,
    report: pd.DataFrame,
    manifest: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything one run writes, for ``InferenceOutputDataset`` to save in a new folder;
    binary masks (0/255, lazily) are ``labels > 0``."""
    return {
        "masks": {k: functools.partial(mask_image, v) for k, v in labels.items()},
        "labels": dict(labels),
        "overlays": dict(overlays),
        "nuclei": nuclei,
        "submission": submission,
        "report": report,
        "manifest": dict(manifest),
    }


def _overlay(
    images: ImageFolder, image_id: str, labels: np.ndarray, colour: Sequence[int], mode: str
) -> np.ndarray:
    return draw_contours(images.read(image_id), labels, colour, mode)


def _manifest(
    images: ImageFolder,
    model: keras.Model,
    labels: Mapping[str, np.ndarray],
    problems: Sequence[Mapping[str, str]],
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
        },
        "parameters": {
            "preprocessing": dict(preprocessing),
            "segmentation": settings.to_params(),
            "instance_postprocessing": dict(separation),
        },
        "images": [
            {
                "id": image_id,
                "file": images.files[image_id],
                "height": int(label_map.shape[0]),
                "width": int(label_map.shape[1]),
                "nuclei": int(label_map.max()),
            }
            for image_id, label_map in labels.items()
        ],
        "skipped": [dict(problem) for problem in problems],
    }
