"""Nodes of the ``evaluation`` pipeline: held-out scores, baselines, separation tuning.

Every probability here comes from :mod:`nucleus_segmentation.segment` on the *ingested*
(raw) images, and every score is taken on each image's own pixel grid against its own
labels, on the instance label maps that inference would write (``labels > 0`` is the mask).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import keras
import matplotlib.figure
import numpy as np
import pandas as pd

from nucleus_segmentation import bundle
from nucleus_segmentation.errors import ParameterError
from nucleus_segmentation.imaging.colour import to_grayscale, to_uint8
from nucleus_segmentation.imaging.geometry import resize_labels
from nucleus_segmentation.imaging.instances import can_separate, separate_instances
from nucleus_segmentation.imaging.preprocess import network_channels
from nucleus_segmentation.imaging.threshold import multilevel_segment, otsu_segment
from nucleus_segmentation.parallel import parallel_map
from nucleus_segmentation.reporting import (
    TABLE_SCORES,
    comparison_markdown,
    panel_figure,
    pick_examples,
)
from nucleus_segmentation.scoring import score_images, summarise_groups
from nucleus_segmentation.segment import (
    BY_MODALITY,
    MODALITY_RULE,
    SegmentationSettings,
    bundle_modalities,
    check_separation_plan,
    plan_settings,
    prepare_image,
    record_tuning,
    segmentation_probabilities,
    separation_for,
)
from nucleus_segmentation.tuning import (
    labelled_items,
    per_modality_min_images,
    search_by_modality,
    search_separation,
)

logger = logging.getLogger(__name__)
# Rows of the Table-2 style comparison, in the paper's order.
METHOD_NAMES = {
    "otsu": "Otsu threshold",
    "multilevel": "Multi-level threshold (differential evolution, ref. [14])",
    "unet_baseline": "U-Net (plain, same budget)",
    "attention_unet": "Attention U-Net (SAP + CE + ASPP, ours)",
}
IN_USE = "in_use"  # the test-time variant of params:segmentation (what inference runs)


def _label(method: str, params: Mapping[str, Any]) -> str:
    """A method's row label; the evaluated model's comes from ``params["model_label"]``."""
    if method == "attention_unet":
        return str(params.get("model_label") or METHOD_NAMES[method])
    return METHOD_NAMES[method]


def _ids(split: pd.DataFrame, which: str) -> list[str]:
    return split.loc[split["split"] == which, "image_id"].tolist()


def predict_validation_images(
    model: keras.Model,
    ingested: Mapping[str, np.ndarray],
    split: pd.DataFrame,
    preprocessing: Mapping[str, Any],
    segmentation: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """Nucleus probability (HxW float32, own grid) of every *validation* image through the
    segmentation path with the settings inference uses, for tuning the separation without
    touching the test split."""
    settings = SegmentationSettings.from_params(segmentation)
    ids = _ids(split, "validation")
    return segmentation_probabilities(
        model, ingested, ids, preprocessing, settings, "predicting validation"
    )


def tune_instance_separation(
    probabilities: Mapping[str, np.ndarray],
    ingested: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
    modality_rule: Mapping[str, Any],
    segmentation: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Choose how nuclei are separated and outlined by the mean DSB score on the
    *validation* split, at the images' own scale (where inference applies it).

    ``segmentation`` (``params:segmentation``): the settings the probabilities were
    predicted with, recorded in the result (``tuned_on``) so inference can warn when its
    own differ.

    First every combination of ``params["instances"]["search"]`` (threshold, watershed
    relief ``method`` distance | probability, ``seed_depth``, ``smoothing``, ``min_size``) is
    scored against the validation images' own labels; then, with the best of those, each
    outline level of ``params["instances"]["outline"]`` (null: the threshold's contour), so
    the level that draws the nuclei is chosen apart from the one that finds them. With
    ``params["instances"]["per_modality"]["min_images"]`` set, each modality with that many
    validation images then gets a search of its own, stored as ``by_modality`` with
    ``modality_rule`` (``ingestion.modality``): the colour test that tells each validation
    image its modality here, and each image its modality in inference. The test split is
    never looked at.

    Returns:
        ``(best settings, search table)``: a separation plan for
        :func:`check_separation_plan` / :func:`image_separation` (the keyword arguments of
        :func:`separate_instances`, with ``by_modality`` where modalities got their own,
        and ``tuned_on``), and one row per setting scored with its mean validation
        score and ``modality`` (``all``: every validation image), best first.
    """
    items = labelled_items(probabilities, ingested, "the validation split")
    instances = params["instances"]
    min_images = per_modality_min_images(instances)  # checked before the searches
    best, table = search_separation(
        items,
        instances["search"],
        instances.get("outline"),
        instances["n_workers"],
        "validation_dsb_score",
    )
    logger.info(
        "Nucleus separation tuned on %d validation images: %s (DSB score %.4f)",
        len(items),
        best,
        table.iloc[0]["validation_dsb_score"],
    )
    table = table.assign(modality="all")

    def recorded(plan: dict[str, Any]) -> dict[str, Any]:
        if segmentation is None:
            return plan
        return record_tuning(plan, SegmentationSettings.from_params(segmentation))

    if min_images is None:
        return recorded(best), table
    by_modality, tables = search_by_modality(
        dict(zip(probabilities, items, strict=True)),
        bundle_modalities(ingested, probabilities, modality_rule),
        min_images,
        best,
        instances["search"],
        instances.get("outline"),
        instances["n_workers"],
        "validation_dsb_score",
    )
    if not by_modality:
        return recorded(best), table
    table = pd.concat([table, tables], ignore_index=True)
    plan = {**best, BY_MODALITY: by_modality, MODALITY_RULE: dict(modality_rule)}
    return recorded(check_separation_plan(plan, "the tuned separation")), table


def _variants(segmentation: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """``{name: SegmentationSettings}``: the settings in use, then each of
    ``params["tta_compare"]`` (same keys as ``segmentation.tta``)."""
    settings = SegmentationSettings.from_params(segmentation)
    variants = {IN_USE: settings}
    for name, tta in (params.get("tta_compare") or {}).items():
        if name == IN_USE:
            raise ParameterError(f"evaluation.tta_compare: {IN_USE!r} is reserved")
        variants[str(name)] = settings.with_tta(tta["scales"], tta["flips"])
    return variants


def predict_test_images(
    model: keras.Model,
    ingested: Mapping[str, np.ndarray],
    split: pd.DataFrame,
    preprocessing: Mapping[str, Any],
    segmentation: Mapping[str, Any],
    params: Mapping[str, Any],
) -> dict[str, dict[str, np.ndarray]]:
    """``{variant: {image_id: nucleus probability}}`` on the *test* split, for the settings
    in use (``in_use``) and each test-time variant of ``params["tta_compare"]``."""
    ids = _ids(split, "test")
    results = {}
    for name, settings in _variants(segmentation, params).items():
        description = f"predicting test ({name})"
        results[name] = segmentation_probabilities(
            model, ingested, ids, preprocessing, settings, description
        )
        logger.info("Predicted %d test images with test-time variant %r", len(ids), name)
    return results


def segment_test_with_baselines(
    ingested: Mapping[str, np.ndarray],
    split: pd.DataFrame,
    baseline_model: keras.Model | None,
    preprocessing: Mapping[str, Any],
    segmentation: Mapping[str, Any],
    params: Mapping[str, Any],
) -> dict[str, dict[str, np.ndarray]]:
    """The comparison methods on the test split: ``{method: {image_id: probability}}`` on
    each image's own grid.

    ``otsu`` and ``multilevel`` (differential evolution, seeded) threshold the preprocessed
    gray image (gray for colour input too) at network scale (0/1 maps, brought back to the
    image's grid); ``unet_baseline`` is the plain U-Net of ``--env baseline`` (gray input)
    through the same segmentation path. It is left out when
    ``params["compare_with_baseline"]`` is false (``--env baseline`` evaluates the baseline
    itself) and, with a warning, when it has not been trained yet.
    """
    ids = _ids(split, "test")
    settings = SegmentationSettings.from_params(segmentation)
    images = {k: bundle.field(ingested, k, "image") for k in ids}
    multilevel = params["baselines"]["multilevel"]
    seed = int(params["baselines"]["seed"])

    def own_grid(binary: np.ndarray, image_id: str) -> np.ndarray:
        return resize_labels(binary, images[image_id].shape[:2]).astype(np.float32)

    # The classical baselines threshold one gray channel and the plain U-Net (--env
    # baseline) takes one, whatever the network under evaluation takes.
    gray = dict(preprocessing)
    if network_channels(preprocessing) != 1:
        gray["stain"] = {**(preprocessing.get("stain") or {}), "representation": "gray"}
    prepared = {k: prepare_image(im, gray, settings.scale) for k, im in images.items()}
    results = {
        "otsu": {k: own_grid(otsu_segment(image), k) for k, image in prepared.items()},
        "multilevel": {
            k: own_grid(
                multilevel_segment(
                    image,
                    levels=int(multilevel["levels"]),
                    seed=seed,
                    nucleus_classes=int(multilevel["nucleus_classes"]),
                ),
                k,
            )
            for k, image in prepared.items()
        },
    }
    if not params["compare_with_baseline"]:
        logger.info("The baseline is the model under evaluation: no separate baseline row.")
    elif baseline_model is None:
        logger.warning(
            "No plain U-Net baseline model: the comparison leaves it out. Train it with "
            "`kedro run --pipeline training --env baseline`."
        )
    else:
        results["unet_baseline"] = segmentation_probabilities(
            baseline_model, ingested, ids, gray, settings, "predicting test (baseline)"
        )
    return results


def separate_test_instances(
    variants: Mapping[str, Mapping[str, np.ndarray]],
    baselines: Mapping[str, Mapping[str, np.ndarray]],
    postprocessing: Mapping[str, Any],
    ingested: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
) -> dict[str, dict[str, np.ndarray]]:
    """Instance label maps of every method and test-time variant, each separated once:
    ``{"attention_unet" | "tta:<variant>" | baseline method: {image_id: HxW uint16}}``.

    The networks use the tuned ``postprocessing`` (a two-class baseline beside a boundary
    model tuned to ``interior`` seeds takes the distance relief instead); the thresholding
    baselines give 0/1 maps, so they are split on the distance relief at threshold 0.5 (a
    flat probability has no valleys). ``attention_unet`` is the variant in use, the one
    inference runs. Settings per modality, where the tuned file has them, go to each image
    by the colour test with the file's ``modality_rule`` on its raw image (``ingested``), as
    inference runs it.
    """
    tuned = check_separation_plan(postprocessing, "instance_postprocessing")
    binary = {**plan_settings(tuned)[0], "method": "distance", "threshold": 0.5}
    sources = {
        **{f"tta:{name}": probs for name, probs in variants.items() if name != IN_USE},
        **baselines,
        "attention_unet": variants[IN_USE],
    }
    work = [
        (method, image_id, probability)
        for method, probabilities in sources.items()
        for image_id, probability in probabilities.items()
    ]
    settings = {m: binary if m in ("otsu", "multilevel") else tuned for m in sources}
    ids = variants[IN_USE]
    rule = tuned.get(MODALITY_RULE)
    modality = bundle_modalities(ingested, ids, rule) if rule else dict.fromkeys(ids)
    separated = parallel_map(
        functools.partial(_separate, settings=settings, modality=modality),
        work,
        params["instances"]["n_workers"],
        chunksize=4,
        progress="separating nuclei",
    )
    results: dict[str, dict[str, np.ndarray]] = {method: {} for method in sources}
    for (method, image_id, _), labels in zip(work, separated, strict=True):
        results[method][image_id] = labels
    return results


def collect_scored_labels(
    instances: Mapping[str, Mapping[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """The instance label maps the reported test scores were computed on (the model with
    the settings in use), as a bundle ``{"<image_id>/labels": HxW uint16}``: kept, so a
    user can check them against what ``kedro run --pipeline inference`` writes."""
    return bundle.pack(
        (image_id, {"labels": labels}) for image_id, labels in instances["attention_unet"].items()
    )


def _separate(
    item: tuple[str, str, np.ndarray], settings: Mapping[str, dict], modality: Mapping[str, str]
) -> np.ndarray:
    method, image_id, probability = item
    chosen = separation_for(settings[method], modality.get(image_id))
    if not can_separate(chosen["method"], probability):
        # A two-class baseline beside a boundary model: no interior map to seed from.
        chosen = {**chosen, "method": "distance"}
    return separate_instances(probability, **chosen)


def _truths(ingested: Mapping[str, np.ndarray], ids: Iterable[str]) -> dict[str, np.ndarray]:
    return {k: bundle.field(ingested, k, "labels") for k in ids}


def evaluate_test_predictions(
    instances: Mapping[str, Mapping[str, np.ndarray]],
    ingested: Mapping[str, np.ndarray],
    split: pd.DataFrame,
    params: Mapping[str, Any],
    segmentation: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, dict], pd.DataFrame]:
    """Pixel scores (paper 3.3: PA, MPA, MIoU, nucleus IoU, Dice; pooled and per image),
    instance scores (DSB score, P/R/F1 at IoU 0.5) and the signed area error of matched
    nuclei on the test split, on each image's own grid.

    Returns:
        ``(per_image, per_modality, per_acquisition, metrics, tta_table)`` for the settings
        in use: one row per test image (with its modality and acquisition group); one row
        per modality plus ``all``; one row per acquisition group plus ``all`` (how far
        scores move from one acquisition to the next); the ``all`` row as MLflow metrics;
        and the ``all`` row of every test-time variant scored, so the report shows what
        flips and multi-scale inference add.
    """
    modality = split.set_index("image_id")["modality"].to_dict()
    acquisition = split.set_index("image_id")["group"]
    truths = _truths(ingested, instances["attention_unet"])
    variants = {IN_USE: instances["attention_unet"]}
    variants.update({k[4:]: v for k, v in instances.items() if k.startswith("tta:")})
    settings = _variants(segmentation, params)
    tta_rows, chosen = [], None
    for name, labels in variants.items():
        per_image, per_modality = score_images(truths, labels, modality)
        per_image = per_image.rename(columns={"group": "modality"})
        per_modality = per_modality.rename(columns={"group": "modality"})
        overall = per_modality.set_index("modality").loc["all"]
        tta_rows.append(
            {
                "variant": name,
                "scales": " ".join(str(s) for s in settings[name].tta_scales),
                "flips": " ".join(settings[name].tta_flips),
                "in_use": name == IN_USE,
                **overall.drop("images").to_dict(),
            }
        )
        if name == IN_USE:
            chosen = per_image, per_modality, overall
    per_image, per_modality, overall = chosen  # type: ignore[misc]
    per_image = per_image.assign(acquisition=per_image["image_id"].map(acquisition))
    per_acquisition = summarise_groups(
        per_image, truths, instances["attention_unet"], "acquisition"
    )
    metrics = {str(k): {"value": float(v), "step": 0} for k, v in overall.items()}
    logger.info(
        "Test split (own grid): MIoU %.4f, nucleus IoU %.4f, DSB score %.4f, area error %+.3f",
        overall["miou_pooled"],
        overall["nucleus_iou_pooled"],
        overall["dsb_score"],
        overall["area_error"],
    )
    return per_image, per_modality, per_acquisition, metrics, pd.DataFrame(tta_rows)


def compare_methods(
    instances: Mapping[str, Mapping[str, np.ndarray]],
    ingested: Mapping[str, np.ndarray],
    split: pd.DataFrame,
    params: Mapping[str, Any],
) -> tuple[pd.DataFrame, str, dict[str, dict]]:
    """The paper's Table 2 on our test split: each method's PA, MPA, MIoU (pooled, %),
    nucleus IoU and the DSB instance score, on each image's own grid.

    Returns:
        ``(table, markdown, metrics)``: the table (one row per method), the same as a
        markdown document, and ``{"<method>.<score>": ...}`` for MLflow.
    """
    modality = split.set_index("image_id")["modality"].to_dict()
    truths = _truths(ingested, instances["attention_unet"])
    rows = []
    for method in (m for m in METHOD_NAMES if m in instances):
        _, summary = score_images(truths, instances[method], modality)
        overall = summary.set_index("group").loc["all"]
        rows.append(
            {
                "method": method,
                "description": _label(method, params),
                "images": int(overall["images"]),
                **{s: float(overall[s]) for s in TABLE_SCORES},
            }
        )
    table = pd.DataFrame(rows)
    metrics = {
        f"{row['method']}.{score}": {"value": row[score], "step": 0}
        for row in rows
        for score in TABLE_SCORES
    }
    return table, comparison_markdown(table), metrics


def plot_comparison_panels(
    instances: Mapping[str, Mapping[str, np.ndarray]],
    ingested: Mapping[str, np.ndarray],
    split: pd.DataFrame,
    params: Mapping[str, Any],
) -> matplotlib.figure.Figure:
    """Paper Fig. 8: for a few test images of each modality, original | each baseline | ours
    | ground truth, every segmentation drawn as nucleus contours over the image (own grid)."""
    figures = params["figures"]
    methods = [m for m in METHOD_NAMES if m in instances]
    examples = pick_examples(
        split, instances["attention_unet"], int(figures["per_modality"]), int(figures["seed"])
    )
    titles = ["original", *[_label(m, params).split(" (")[0] for m in methods], "ground truth"]
    rows = []
    for image_id, modality in examples:
        image = to_grayscale(to_uint8(bundle.field(ingested, image_id, "image")))
        labels = [instances[m][image_id] for m in methods]
        truth = bundle.field(ingested, image_id, "labels")
        rows.append((f"{modality}\n{image_id[:8]}", image, labels, truth))
    return panel_figure(rows, titles, float(figures["panel_inches"]), int(figures["dpi"]))
