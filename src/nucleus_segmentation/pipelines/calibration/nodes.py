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
    BY_MODALITY,
    MODALITY_RULE,
    SEPARATION_KEYS,
    TUNED_ON,
    SegmentationSettings,
    bundle_modalities,
    check_separation_plan,
    image_separation,
    plan_settings,
    segmentation_probabilities,
    separation_for,
    warn_if_tuned_otherwise,
)
from nucleus_segmentation.tuning import fits, labelled_items, search_separation

logger = logging.getLogger(__name__)
REPORT_SCORES = ("dsb_score", "precision", "recall", "f1", "area_error", "nucleus_iou_pooled")
TUNE = ("all", "outline")  # calibration.tune: the whole search | the outline level only
ALL = "all"  # the modality group of a separation with one setting for every image


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


def modality_groups(
    plan: Mapping[str, Any], images: Mapping[str, np.ndarray], ids: list[str]
) -> dict[str, list[str]]:
    """The calibration images ``ids`` by the modality a checked separation plan gives them
    (each image's colour test with the plan's ``modality_rule``, as inference runs it), in
    first-seen order; one group ``all`` for a plan with one setting for every image."""
    if BY_MODALITY not in plan:
        return {ALL: list(ids)}
    groups: dict[str, list[str]] = {}
    for key, modality in bundle_modalities(images, ids, plan[MODALITY_RULE]).items():
        groups.setdefault(modality, []).append(key)
    return groups


def calibrate_group(
    items: list,
    previous: Mapping[str, Any],
    instances: Mapping[str, Any],
    tune: str,
    group: str = ALL,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The search of ``instances`` (or the outline level alone, ``tune: outline``) on one
    group's ``items`` (probability, labels), with ``previous`` (the settings the group's
    images had) scored beside it: the best setting and the table, best first. ``group``
    names the images in messages (a modality, or ``all``)."""
    candidates = [dict(previous)] if fits(previous, items) else []
    search = instances["search"]
    if tune == "outline":
        if not candidates:
            raise ParameterError(
                f"calibration.tune: outline keeps the separation in use for {group} images "
                f"({dict(previous)}), which seeds from a boundary class this model lacks: "
                "calibrate with tune: all"
            )
        search = {key: [previous[key]] for key in SEPARATION_KEYS}
    if not candidates:
        logger.warning(
            "The separation in use for %s images (%s) seeds from a boundary class this model "
            "lacks: calibrating without it",
            group,
            dict(previous),
        )
    return search_separation(
        items,
        search,
        instances.get("outline"),
        instances["n_workers"],
        "calibration_dsb_score",
        candidates=candidates,
    )


def calibrate_separation(
    probabilities: Mapping[str, np.ndarray],
    images: Mapping[str, np.ndarray],
    in_use: Mapping[str, Any],
    params: Mapping[str, Any],
    calibration: Mapping[str, Any],
    segmentation: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Evaluation's search (``params["instances"]``) on the calibration images, the
    separation in use scored beside it, so the result is never worse on them.

    ``calibration["tune"]`` (``params:calibration``): ``outline`` (the default) keeps the
    separation in use and fits only the outline level each nucleus is drawn at, among
    ``params["instances"]["outline"]`` (on a handful of images it never cost more than 0.003
    DSB on a lab's other images, where the whole search cost up to 0.09); ``all`` searches
    every setting of ``params["instances"]["search"]`` and then the outline level.

    The calibration follows the shape of the separation in use: one setting for every image
    is fitted on all calibration images; a plan with settings per modality (evaluation's
    default) has the settings of each modality among the calibration images (by the colour
    test, :func:`modality_groups`) fitted on that modality's images, starting from what
    that modality had (its own settings, else the ones for all images); the other
    modalities, the settings for all images and the colour test's rule stay as they were,
    unless this model cannot run them (interior seeds for a two-class model: see
    :func:`_runnable`).

    ``segmentation`` (``params:segmentation``): the settings the calibration images were
    predicted with. The new version keeps the ``tuned_on`` record of the separation in use
    (its threshold and seeds, and the settings of modalities without calibration images,
    come from there), and a warning names each setting that differs from it.

    Returns:
        ``(calibrated, search table, in use)``: the new ``instance_postprocessing``, one
        row per setting and modality group (``modality``: ``all`` for a single setting)
        with its mean DSB score on that group's images, best first within a group, and the
        separation that was in use, checked (read here, before the new version is written,
        for the report).
    """
    tune = check_calibration(calibration, params)
    labelled_items(probabilities, images, "the calibration images")  # none: a clear error
    plan = check_separation_plan(in_use, "instance_postprocessing (in use)")
    calibrated = {**plan, BY_MODALITY: dict(plan[BY_MODALITY])} if BY_MODALITY in plan else {}
    tables, fitted = [], {}
    for modality, ids in modality_groups(plan, images, list(probabilities)).items():
        group = {k: probabilities[k] for k in ids}
        items = labelled_items(group, images, f"the calibration images ({modality})")
        previous = separation_for(plan, None if modality == ALL else modality)
        best, table = calibrate_group(items, previous, params["instances"], tune, modality)
        if modality == ALL:
            calibrated = best
        else:
            calibrated[BY_MODALITY][modality] = best
        tables.append(table.assign(modality=modality, images=len(ids)))
        fitted[modality] = (len(ids), best)
        logger.info("Calibration of %s (%d images): %s", modality, len(ids), best)
    if BY_MODALITY in calibrated:
        calibrated = _runnable(calibrated, list(probabilities.values()), fitted)
    if segmentation is not None:
        settings = SegmentationSettings.from_params(segmentation)
        warn_if_tuned_otherwise(in_use, settings, "instance_postprocessing (in use)")
    if TUNED_ON in in_use:
        calibrated = {**calibrated, TUNED_ON: in_use[TUNED_ON]}
    table = pd.concat(tables, ignore_index=True)
    leading = ["modality", "images"]
    return calibrated, table[leading + [c for c in table if c not in leading]], plan


def _runnable(
    plan: dict[str, Any], probabilities: list[np.ndarray], fitted: Mapping[str, tuple]
) -> dict[str, Any]:
    """``plan`` with every setting this model's maps cannot run (``interior`` seeds, a plan
    tuned for a boundary model, calibrated with a two-class one) replaced, so the next
    inference runs: the settings for all images by the setting fitted on the most
    calibration images, another modality's own settings dropped (its images then get the
    settings for all images)."""
    maps = [(p, None) for p in probabilities]
    pooled = plan_settings(plan)[0]
    if not fits(pooled, maps):
        pooled = dict(max(fitted.values(), key=lambda item: item[0])[1])
        logger.warning(
            "The settings for all images seed from a boundary class this model lacks: "
            "replaced by the calibrated %s",
            pooled,
        )
    kept = {m: s for m, s in plan[BY_MODALITY].items() if fits(s, maps)}
    for modality in sorted(set(plan[BY_MODALITY]) - set(kept)):
        logger.warning(
            "The settings for %s images seed from a boundary class this model lacks: "
            "dropped (they get the settings for all images)",
            modality,
        )
    return {**pooled, BY_MODALITY: kept, MODALITY_RULE: plan[MODALITY_RULE]}


def report_calibration(
    probabilities: Mapping[str, np.ndarray],
    images: Mapping[str, np.ndarray],
    metadata: pd.DataFrame,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
) -> pd.DataFrame:
    """Rows per separation (``before``: the one in use until now, ``after``: calibrated) and
    modality group of the calibration images (:func:`modality_groups` under ``before``;
    with several groups, a last row ``all`` for every image, each by its own settings)
    with the scores on those images: DSB score, P/R/F1 at IoU 0.5, pooled nucleus IoU and
    the signed area error of matched nuclei ((predicted - true) / true), and the settings
    the group's images get. The scores are on the images the calibration was tuned on
    (in-sample)."""
    if not probabilities:
        raise DataProblem("the calibration images: none to report on")
    truths = {k: bundle.field(images, k, "labels") for k in probabilities}
    groups = modality_groups(
        check_separation_plan(before, "instance_postprocessing (before)"),
        images,
        list(probabilities),
    )
    described = ", ".join(f"{m}: {len(ids)}" for m, ids in groups.items())
    total = len(groups) > 1  # a last row over every image, each by its own settings
    if total:
        groups[ALL] = list(probabilities)
    rows = []
    for name, plan in (("before", before), ("after", after)):
        plan = check_separation_plan(plan, f"instance_postprocessing ({name})")
        chosen = {k: image_separation(plan, bundle.field(images, k, "image")) for k in truths}
        for modality, ids in groups.items():
            settings = {} if total and modality == ALL else chosen[ids[0]]
            row = {"separation": name, "modality": modality, "images": len(ids)}
            if not all(fits(chosen[k], [(probabilities[k], None)]) for k in ids):
                # An interior separation left from a boundary model: it cannot run on this one.
                rows.append(
                    {**row, "images": 0, **dict.fromkeys(REPORT_SCORES, np.nan), **settings}
                )
                continue
            predictions = {k: separate_instances(probabilities[k], **chosen[k]) for k in ids}
            _, summary = score_images(
                {k: truths[k] for k in ids}, predictions, dict.fromkeys(ids, "calibration")
            )
            overall = summary.set_index("group").loc["all"]
            rows.append({**row, **{k: float(overall[k]) for k in REPORT_SCORES}, **settings})
    report = pd.DataFrame(rows)
    totals = report[report["modality"] == list(groups)[-1]]  # every image
    logger.info(
        "Calibrated on %d images (%s): DSB score %.3f -> %.3f, area error %+.1f %% -> "
        "%+.1f %% (in-sample); inference now uses %s",
        len(metadata),
        described,
        totals["dsb_score"].iloc[0],
        totals["dsb_score"].iloc[1],
        100 * totals["area_error"].iloc[0],
        100 * totals["area_error"].iloc[1],
        after,
    )
    return report
