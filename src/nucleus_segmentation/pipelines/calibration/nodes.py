"""Nodes of the ``calibration`` pipeline: the separation fitted to a user's own labels.

Labs draw nucleus outlines differently (tight to the chromatin, or out to the envelope), so
the separation tuned on stage1_train's labels may draw nuclei a pixel too large or too small
for another lab's. These nodes score the user's labelled images before and after tuning the
separation and the outline level on them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import pandas as pd

from nucleus_segmentation import bundle
from nucleus_segmentation.errors import DataProblem, ParameterError, refuse_unknown_keys
from nucleus_segmentation.imaging.instances import separate_instances
from nucleus_segmentation.scoring import score_images
from nucleus_segmentation.segment import (
    SEPARATION_KEYS,
    SegmentationSettings,
    check_separation,
    check_separation_plan,
    image_separation,
    segmentation_probabilities,
)
from nucleus_segmentation.tuning import fits, labelled_items, search_separation

logger = logging.getLogger(__name__)
REPORT_SCORES = ("dsb_score", "precision", "recall", "f1", "area_error", "nucleus_iou_pooled")
TUNE = ("all", "outline")  # calibration.tune: the whole search | the outline level only


def check_calibration(calibration: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    """``calibration.tune``, checked with what it needs from ``params`` (evaluation's
    settings): an outline-only calibration needs outline levels to choose from."""
    calibration = dict(calibration)
    refuse_unknown_keys(calibration, {"tune"}, "params:calibration")
    tune = calibration.get("tune", "outline")
    if tune not in TUNE:
        raise ParameterError(f"calibration.tune must be one of {list(TUNE)}, got {tune!r}")
    if tune == "outline" and not any(
        level is not None for level in params["instances"].get("outline") or []
    ):
        raise ParameterError(
            "calibration.tune: outline fits the outline level among "
            "evaluation.instances.outline, which lists none: give levels such as "
            "[null, 0.3, 0.5, 0.7]"
        )
    return tune


def predict_calibration_images(
    model: keras.Model,
    images: Mapping[str, np.ndarray],
    metadata: pd.DataFrame,
    preprocessing: Mapping[str, Any],
    segmentation: Mapping[str, Any],
    params: Mapping[str, Any],
    calibration: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """Nucleus probability (HxW, own grid) of every calibration image, by the path inference
    runs (preprocessing, scale policy, tiling, test-time variants, precision). The
    calibration settings (``params``: evaluation's, ``calibration``) are checked first, so a
    mistyped one stops the run before the images are predicted."""
    check_calibration(calibration, params)
    settings = SegmentationSettings.from_params(segmentation)
    ids = metadata["image_id"].tolist()
    return segmentation_probabilities(
        model, images, ids, preprocessing, settings, "predicting calibration images"
    )


def settings_in_use(
    in_use: Mapping[str, Any], images: Mapping[str, np.ndarray], ids: list[str]
) -> dict[str, Any]:
    """The settings the separation in use gives the calibration images ``ids``: with
    settings per modality, those of the images' most common modality (each image's colour
    test with the file's ``modality_rule``, as inference runs it)."""
    plan = check_separation_plan(in_use, "instance_postprocessing (in use)")
    chosen = [image_separation(plan, bundle.field(images, k, "image")) for k in ids]
    return max(chosen, key=chosen.count)


def calibrate_separation(
    probabilities: Mapping[str, np.ndarray],
    images: Mapping[str, np.ndarray],
    in_use: Mapping[str, Any],
    params: Mapping[str, Any],
    calibration: Mapping[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Evaluation's search (``params["instances"]``) on the calibration images, the
    separation in use scored beside it, so the result is never worse on them.

    ``calibration["tune"]`` (``params:calibration``): ``outline`` (the default) keeps the
    separation in use and fits only the outline level each nucleus is drawn at, among
    ``params["instances"]["outline"]`` (on a handful of images it never cost more than 0.003
    DSB on a lab's other images, where the whole search cost up to 0.09); ``all`` searches
    every setting of ``params["instances"]["search"]`` and then the outline level.

    Returns:
        ``(calibrated, search table, in use)``: the new ``instance_postprocessing``, one
        row per setting with its mean DSB score on the calibration images, best first, and
        the separation that was in use, checked (read here, before the new version is
        written, for the report). The calibrated separation is one setting for the user's
        images, whatever the one in use held per modality (see :func:`settings_in_use`).
    """
    tune = check_calibration(calibration, params)
    items = labelled_items(probabilities, images, "the calibration images")
    instances = params["instances"]
    search = instances["search"]
    previous = settings_in_use(in_use, images, list(probabilities))
    candidates = [previous] if fits(previous, items) else []
    if tune == "outline":
        if not candidates:
            raise ParameterError(
                f"calibration.tune: outline keeps the separation in use ({previous}), which "
                "seeds from a boundary class this model lacks: calibrate with tune: all"
            )
        search = {key: [previous[key]] for key in SEPARATION_KEYS}
    if not candidates:
        logger.warning(
            "The separation in use (%s) seeds from a boundary class this model lacks: "
            "calibrating without it",
            previous,
        )
    best, table = search_separation(
        items,
        search,
        instances.get("outline"),
        instances["n_workers"],
        "calibration_dsb_score",
        candidates=candidates,
    )
    return best, table, previous


def report_calibration(
    probabilities: Mapping[str, np.ndarray],
    images: Mapping[str, np.ndarray],
    metadata: pd.DataFrame,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
) -> pd.DataFrame:
    """One row per separation (``before``: the one in use until now, ``after``: calibrated)
    with its scores on the calibration images: DSB score, P/R/F1 at IoU 0.5, pooled nucleus
    IoU and the signed area error of matched nuclei ((predicted - true) / true), and the
    settings. The scores are on the images the calibration was tuned on (in-sample)."""
    if not probabilities:
        raise DataProblem("the calibration images: none to report on")
    truths = {k: bundle.field(images, k, "labels") for k in probabilities}
    groups = dict.fromkeys(probabilities, "calibration")
    rows = []
    for name, separation in (("before", before), ("after", after)):
        settings = check_separation(separation, f"instance_postprocessing ({name})")
        if not fits(settings, [(p, None) for p in probabilities.values()]):
            # An interior separation left from a boundary model: it cannot run on this one.
            scores = dict.fromkeys(REPORT_SCORES, np.nan)
            rows.append({"separation": name, "images": 0, **scores, **settings})
            continue
        predictions = {k: separate_instances(p, **settings) for k, p in probabilities.items()}
        _, summary = score_images(truths, predictions, groups)
        overall = summary.set_index("group").loc["all"]
        rows.append(
            {
                "separation": name,
                "images": len(predictions),
                **{k: float(overall[k]) for k in REPORT_SCORES},
                **settings,
            }
        )
    report = pd.DataFrame(rows)
    logger.info(
        "Calibrated on %d images: DSB score %.3f -> %.3f, area error %+.1f %% -> %+.1f %% "
        "(in-sample); inference now uses %s",
        len(metadata),
        report["dsb_score"].iloc[0],
        report["dsb_score"].iloc[1],
        100 * report["area_error"].iloc[0],
        100 * report["area_error"].iloc[1],
        check_separation(after),
    )
    return report
