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
from nucleus_segmentation.errors import DataProblem, ParameterError
from nucleus_segmentation.imaging.codec import InvalidImageError
from nucleus_segmentation.imaging.geometry import resize_image
from nucleus_segmentation.imaging.instances import separate_instances
from nucleus_segmentation.imaging.measure import NUCLEUS_COLUMNS, measure_nuclei
from nucleus_segmentation.imaging.overlay import contour_colour, draw_contours, mask_image
from nucleus_segmentation.imaging.preprocess import preprocess_image
from nucleus_segmentation.imaging.rle import labels_to_rles
from nucleus_segmentation.imaging.tiling import predict_tiled
from nucleus_segmentation.model.predict import FLIPS, predict_with_tta

logger = logging.getLogger(__name__)
NUCLEUS = 1  # class index of "nucleus" in the network's softmax output
POSTPROCESSING_KEYS = ("threshold", "method", "seed_depth", "smoothing", "min_size")
REPORT_COLUMNS = ["file", "problem"]


def segment_images(
    images: ImageFolder,
    model: keras.Model,
    postprocessing: Mapping[str, Any],
    preprocessing: Mapping[str, Any],
    params: Mapping[str, Any],
) -> tuple[dict[str, np.ndarray], pd.DataFrame, dict[str, Any]]:
    """Segment every image of the folder, one image at a time.

    Each image is prepared as in training (``preprocessing``, but at its own size: resizing
    only by ``params["scale"]``), its nucleus probability predicted whole or in tiles
    (``tile_size``, ``tile_overlap``; test-time ``tta`` scales and flips), brought back to
    the image's size, and split into nuclei by :func:`separate_instances` with the tuned
    ``postprocessing``. A file that cannot be decoded (empty, corrupt) is skipped and
    reported.

    Returns:
        ``(labels, report, manifest)``: ``{image id: HxW uint16 label map}`` at each image's
        own size; the skipped files (columns ``file``, ``problem``); and a JSON-able record
        of the input folder, the model (file, version, digest) and every setting used.

    Raises:
        ValueError: invalid settings, or no usable image in the folder at all.
    """
    settings = _check_settings(params)
    separation = _check_postprocessing(postprocessing)
    predict = functools.partial(_predict_nucleus, model, settings)
    labels: dict[str, np.ndarray] = {}
    problems: list[dict[str, str]] = []
    for image_id, load in images.items():
        try:
            image = load()
        except InvalidImageError as exc:
            logger.warning("Skipping %s: %s", exc.name, exc.problem)
            problems.append({"file": exc.name, "problem": exc.problem})
            continue
        started = time.perf_counter()
        probability = _nucleus_probability(predict, image, preprocessing, settings)
        labels[image_id] = separate_instances(probability, **separation)
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


def _check_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params:inference`` as plain values, checked before any image is read."""
    scale, multiple = float(params["scale"]), int(params["multiple"])
    tile_size, overlap = int(params["tile_size"]), int(params["tile_overlap"])
    batch_size = int(params["batch_size"])
    scales = [float(s) for s in params["tta"]["scales"]]
    flips = [str(f) for f in params["tta"]["flips"]]
    problems = []
    if scale <= 0:
        problems.append(f"scale must be positive, got {scale}")
    if multiple < 1 or tile_size < multiple or tile_size % multiple:
        problems.append(f"tile_size ({tile_size}) must be a multiple of multiple ({multiple})")
    if not 0 <= overlap < tile_size:
        problems.append(f"tile_overlap ({overlap}) must be in [0, tile_size)")
    if batch_size < 1:
        problems.append(f"batch_size must be at least 1, got {batch_size}")
    if not scales or min(scales) <= 0:
        problems.append(f"tta.scales must be positive numbers, got {scales}")
    if not flips or set(flips) - set(FLIPS):
        problems.append(f"tta.flips must be a non-empty subset of {sorted(FLIPS)}, got {flips}")
    contour_colour(params["overlay"]["colour"], params["overlay"]["mode"])
    if problems:
        raise ParameterError("params:inference: " + "; ".join(problems))
    return {
        "scale": scale,
        "tile_size": tile_size,
        "tile_overlap": overlap,
        "multiple": multiple,
        "batch_size": batch_size,
        "tta": {"scales": scales, "flips": flips},
        "overlay": {
            "colour": [int(c) for c in params["overlay"]["colour"]],
            "mode": str(params["overlay"]["mode"]),
        },
    }


def _check_postprocessing(postprocessing: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(postprocessing) - set(POSTPROCESSING_KEYS))
    if unknown:
        raise DataProblem(
            f"instance_postprocessing has unknown keys {unknown}; expected {POSTPROCESSING_KEYS}"
        )
    return dict(postprocessing)


def _network_preprocessing(
    preprocessing: Mapping[str, Any], shape: tuple[int, ...], scale: float
) -> dict[str, Any]:
    """The training preprocessing with resizing off, or set to rescale by ``scale``."""
    resize = dict(preprocessing.get("resize") or {})
    resize["enabled"] = scale != 1.0
    resize["size"] = [max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))]
    resize.setdefault("interpolation", "auto")
    return {**preprocessing, "resize": resize}


def _predict_nucleus(
    model: keras.Model, settings: Mapping[str, Any], tiles: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """uint8 HxW network inputs -> their HxW float32 nucleus probabilities."""
    probabilities = predict_with_tta(
        model,
        tiles,
        settings["multiple"],
        settings["batch_size"],
        scales=settings["tta"]["scales"],
        flips=settings["tta"]["flips"],
    )
    return [probability[..., NUCLEUS] for probability in probabilities]


def _nucleus_probability(
    predict: Callable[[Sequence[np.ndarray]], list[np.ndarray]],
    image: np.ndarray,
    preprocessing: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> np.ndarray:
    """Decoded image -> HxW float32 nucleus probability at the image's own size."""
    height, width = image.shape[:2]
    network_input = preprocess_image(
        image, _network_preprocessing(preprocessing, image.shape, settings["scale"])
    )
    probability = predict_tiled(
        predict,
        network_input,
        settings["tile_size"],
        settings["tile_overlap"],
        settings["batch_size"],
    )
    if probability.shape != (height, width):
        # Back to the image's size on the probability, never on the labels: the watershed
        # then runs at the image's own resolution.
        probability = resize_image(probability, (height, width), "auto")
    return probability


def _manifest(
    images: ImageFolder,
    model: keras.Model,
    labels: Mapping[str, np.ndarray],
    problems: Sequence[Mapping[str, str]],
    preprocessing: Mapping[str, Any],
    settings: Mapping[str, Any],
    separation: Mapping[str, Any],
) -> dict[str, Any]:
    """What produced this result: input folder, model file and version, all settings."""
    source = getattr(model, "loaded_from", None)
    resize = dict(preprocessing.get("resize") or {})
    effective_resize = {"enabled": False}
    if settings["scale"] != 1.0:
        interpolation = resize.get("interpolation", "auto")
        effective_resize = {
            "enabled": True,
            "scale": settings["scale"],
            "interpolation": interpolation,
        }
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
            "preprocessing": {**preprocessing, "resize": effective_resize},
            "inference": dict(settings),
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
