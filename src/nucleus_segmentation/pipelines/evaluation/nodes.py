"""Nodes of the ``evaluation`` pipeline: held-out scores, baselines, separation tuning."""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import keras
import matplotlib.figure
import numpy as np
import pandas as pd
from skimage.segmentation import find_boundaries

from nucleus_segmentation.errors import DataProblem, ParameterError
from nucleus_segmentation.imaging.instances import score_separations, separate_instances
from nucleus_segmentation.imaging.matching import detection_scores, dsb_score
from nucleus_segmentation.imaging.threshold import multilevel_segment, otsu_segment
from nucleus_segmentation.model.metrics import evaluate_segmentation
from nucleus_segmentation.model.predict import predict_with_tta
from nucleus_segmentation.parallel import parallel_map

logger = logging.getLogger(__name__)
PIXEL_SCORES = ("pa", "mpa", "miou", "nucleus_iou", "dice")
INSTANCE_SCORES = ("dsb_score", "precision", "recall", "f1")
# Rows of the Table-2 style comparison, in the paper's order.
METHOD_NAMES = {
    "otsu": "Otsu threshold",
    "multilevel": "Multi-level threshold (differential evolution, ref. [14])",
    "unet_baseline": "U-Net (plain, same budget)",
    "attention_unet": "Attention U-Net (SAP + CE + ASPP, ours)",
}


def _label(method: str, params: Mapping[str, Any]) -> str:
    """A method's row label; the evaluated model's comes from ``params["model_label"]``."""
    if method == "attention_unet":
        return str(params.get("model_label") or METHOD_NAMES[method])
    return METHOD_NAMES[method]


def _ids(split: pd.DataFrame, which: str) -> list[str]:
    return split.loc[split["split"] == which, "image_id"].tolist()


def _predict(
    model: keras.Model,
    images: Sequence[np.ndarray],
    variant: Mapping[str, Any],
    params: Mapping[str, Any],
) -> list[np.ndarray]:
    """Nucleus probability (HxW float32) of each image with one test-time variant."""
    probabilities = predict_with_tta(
        model,
        images,
        int(params["multiple"]),
        int(params["batch_size"]),
        scales=[float(s) for s in variant["scales"]],
        flips=list(variant["flips"]),
    )
    return [p[..., 1] for p in probabilities]


def predict_validation_images(
    model: keras.Model,
    preprocessed: Mapping[str, np.ndarray],
    split: pd.DataFrame,
    params: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """Nucleus probability of every *validation* image (the test-time variant in
    ``params["tta"]["use"]``), for tuning the post-processing without touching the test split.
    """
    tta = params["tta"]
    ids = _ids(split, "validation")
    images = [preprocessed[f"{image_id}/image"] for image_id in ids]
    return dict(zip(ids, _predict(model, images, tta["variants"][tta["use"]], params), strict=True))


def predict_test_images(
    model: keras.Model,
    preprocessed: Mapping[str, np.ndarray],
    split: pd.DataFrame,
    params: Mapping[str, Any],
) -> dict[str, dict[str, np.ndarray]]:
    """``{variant: {image_id: nucleus probability}}`` on the *test* split, whole images, for
    the variant in use and every variant listed in ``params["tta"]["compare"]``."""
    tta = params["tta"]
    ids = _ids(split, "test")
    images = [preprocessed[f"{image_id}/image"] for image_id in ids]
    names = list(dict.fromkeys([tta["use"], *tta.get("compare", [])]))
    unknown = [name for name in names if name not in tta["variants"]]
    if unknown:
        known = list(tta["variants"])
        raise ParameterError(f"evaluation.tta: no variant named {unknown}; known: {known}")
    results = {}
    for name in names:
        results[name] = dict(
            zip(ids, _predict(model, images, tta["variants"][name], params), strict=True)
        )
        logger.info("Predicted %d test images with test-time variant %r", len(ids), name)
    return results


def tune_instance_separation(
    probabilities: Mapping[str, np.ndarray],
    preprocessed: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Choose how nuclei are separated by the mean DSB score on the *validation* split.

    Every combination of ``params["instances"]["search"]`` (threshold, watershed relief
    ``method`` distance | probability, ``seed_depth``, ``smoothing``, ``min_size``) is
    scored; the test split is never looked at.

    Returns:
        ``(best settings, search table)``: keyword arguments for
        :func:`separate_instances`, and one row per setting with its mean validation score,
        best first.
    """
    search = params["instances"]["search"]
    keys = ("threshold", "method", "seed_depth", "smoothing", "min_size")
    settings = [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(search[k] for k in keys))
    ]
    items = [(p, preprocessed[f"{image_id}/labels"]) for image_id, p in probabilities.items()]
    if not items:
        raise DataProblem("the validation split is empty: nothing to tune post-processing on")
    scores = np.array(
        list(
            parallel_map(
                functools.partial(score_separations, settings=settings),
                items,
                params["instances"].get("n_workers", "auto"),
                chunksize=1,
            )
        )
    )
    table = pd.DataFrame(settings).assign(
        validation_dsb_score=scores.mean(axis=0), images=len(items)
    )
    table = table.sort_values("validation_dsb_score", ascending=False, kind="stable")
    best = {k: _plain(v) for k, v in table.iloc[0][list(keys)].items()}
    logger.info(
        "Nucleus separation tuned on %d validation images: %s (DSB score %.4f)",
        len(items),
        best,
        table.iloc[0]["validation_dsb_score"],
    )
    return best, table.reset_index(drop=True)


def _plain(value: Any) -> Any:
    """numpy scalar -> the Python number JSON can hold."""
    return value.item() if isinstance(value, np.generic) else value


def _score(
    masks: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    preprocessed: Mapping[str, np.ndarray],
    modality: Mapping[str, str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-image and per-modality (plus ``all``) pixel and instance scores of a method."""
    rows, groups = [], {}
    for image_id, prediction in masks.items():
        truth_mask = preprocessed[f"{image_id}/mask"]
        truth_labels = preprocessed[f"{image_id}/labels"]
        pixel = evaluate_segmentation([truth_mask], [prediction])
        rows.append(
            {
                "image_id": image_id,
                "modality": modality[image_id],
                **{s: pixel[f"{s}_pooled"] for s in PIXEL_SCORES if s != "dice"},
                "dice": _dice(pixel["nucleus_iou_pooled"]),
                "dsb_score": dsb_score(truth_labels, labels[image_id]),
                "true_nuclei": int(len(np.unique(truth_labels)) - 1),
                "predicted_nuclei": int(labels[image_id].max()),
                **detection_scores(truth_labels, labels[image_id]),
            }
        )
        for group in (modality[image_id], "all"):
            groups.setdefault(group, []).append((truth_mask, prediction))
    per_image = pd.DataFrame(rows)
    summary = []
    for group, pairs in sorted(groups.items()):
        pooled = evaluate_segmentation([t for t, _ in pairs], [p for _, p in pairs])
        pooled["dice_pooled"] = _dice(pooled["nucleus_iou_pooled"])
        members = per_image if group == "all" else per_image[per_image["modality"] == group]
        pooled["dice_per_image"] = float(members["dice"].mean())
        summary.append(
            {
                "modality": group,
                "images": len(pairs),
                **{f"{s}_pooled": pooled[f"{s}_pooled"] for s in PIXEL_SCORES},
                **{f"{s}_per_image": pooled[f"{s}_per_image"] for s in PIXEL_SCORES},
                **{k: float(members[k].mean()) for k in INSTANCE_SCORES},
            }
        )
    return per_image, pd.DataFrame(summary)


def _dice(iou: float) -> float:
    """Dice from the IoU of the same counts: 2TP/(2TP+FP+FN) = 2J/(1+J); NaN stays NaN."""
    return float(2 * iou / (1 + iou)) if np.isfinite(iou) else float("nan")


def _instances(
    probabilities: Mapping[str, np.ndarray], postprocessing: Mapping[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Binary masks (probability > threshold) and separated instance label maps."""
    threshold = float(postprocessing["threshold"])
    masks = {k: (p > threshold).astype(np.uint8) for k, p in probabilities.items()}
    labels = {k: separate_instances(p, **postprocessing) for k, p in probabilities.items()}
    return masks, labels


def evaluate_test_predictions(
    variants: Mapping[str, Mapping[str, np.ndarray]],
    preprocessed: Mapping[str, np.ndarray],
    split: pd.DataFrame,
    postprocessing: Mapping[str, Any],
    params: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict], pd.DataFrame]:
    """Pixel scores (paper 3.3: PA, MPA, MIoU, nucleus IoU, Dice; pooled and per image) and
    instance scores (DSB score, P/R/F1 at IoU 0.5) on the test split.

    Returns:
        ``(per_image, per_modality, metrics, tta_table)`` for the variant in use: one row per
        test image; one row per modality plus ``all`` (pixel scores pooled over the group's
        pixels and averaged per image, instance scores averaged over its images); the
        ``all`` row as MLflow metrics; and the ``all`` row of every test-time variant scored,
        so the report shows what flips and multi-scale inference add.
    """
    modality = split.set_index("image_id")["modality"].to_dict()
    use = params["tta"]["use"]
    tta_rows, chosen = [], None
    for name, probabilities in variants.items():
        per_image, per_modality = _score(
            *_instances(probabilities, postprocessing), preprocessed, modality
        )
        variant = params["tta"]["variants"][name]
        overall = per_modality.set_index("modality").loc["all"]
        tta_rows.append(
            {
                "variant": name,
                "scales": " ".join(str(s) for s in variant["scales"]),
                "flips": " ".join(variant["flips"]),
                "in_use": name == use,
                **overall.drop("images").to_dict(),
            }
        )
        if name == use:
            chosen = per_image, per_modality, overall
    if chosen is None:
        raise ParameterError(f"test predictions of the variant in use ({use!r}) are missing")
    per_image, per_modality, overall = chosen
    metrics = {str(k): {"value": float(v), "step": 0} for k, v in overall.items()}
    logger.info(
        "Test split (%s): MIoU %.4f, nucleus IoU %.4f, DSB score %.4f",
        use,
        overall["miou_pooled"],
        overall["nucleus_iou_pooled"],
        overall["dsb_score"],
    )
    return per_image, per_modality, metrics, pd.DataFrame(tta_rows)


def segment_test_with_baselines(
    preprocessed: Mapping[str, np.ndarray],
    split: pd.DataFrame,
    model: keras.Model,
    baseline_model: keras.Model | None,
    params: Mapping[str, Any],
) -> dict[str, dict[str, np.ndarray]]:
    """The comparison methods on the test split: ``{method: {image_id: probability}}``.

    ``otsu`` and ``multilevel`` (differential evolution, seeded) threshold the preprocessed
    image (0/1 maps); ``unet_baseline`` is the plain U-Net from ``--env baseline``, predicted
    like ``model``; it is left out with a warning when it has not been trained yet, and when
    it is the very file under evaluation (``kedro run --env baseline``).
    """
    ids = _ids(split, "test")
    images = [preprocessed[f"{image_id}/image"] for image_id in ids]
    multilevel = params["baselines"]["multilevel"]
    seed = int(params["baselines"]["seed"])
    results = {
        "otsu": {
            k: otsu_segment(image).astype(np.float32) for k, image in zip(ids, images, strict=True)
        },
        "multilevel": {
            k: multilevel_segment(
                image,
                levels=int(multilevel["levels"]),
                seed=seed,
                nucleus_classes=int(multilevel["nucleus_classes"]),
            ).astype(np.float32)
            for k, image in zip(ids, images, strict=True)
        },
    }
    same_file = getattr(getattr(baseline_model, "loaded_from", None), "filepath", 0) == getattr(
        getattr(model, "loaded_from", None), "filepath", 1
    )
    if same_file:
        logger.info("The baseline is the model under evaluation: no separate baseline row.")
    elif baseline_model is None:
        logger.warning(
            "No plain U-Net baseline model: the comparison leaves it out. Train it with "
            "`kedro run --pipeline training --env baseline`."
        )
    else:
        variant = params["tta"]["variants"][params["tta"]["use"]]
        results["unet_baseline"] = dict(
            zip(ids, _predict(baseline_model, images, variant, params), strict=True)
        )
    return results


def _compared_methods(
    baselines: Mapping[str, Mapping[str, np.ndarray]],
    variants: Mapping[str, Mapping[str, np.ndarray]],
    postprocessing: Mapping[str, Any],
    params: Mapping[str, Any],
) -> dict[str, tuple[Mapping[str, np.ndarray], dict[str, Any]]]:
    """``{method: (probabilities, separation settings)}`` in Table-2 order, present ones only.

    Thresholding baselines give 0/1 maps, so their nuclei are separated on the distance relief
    (a flat probability has no valleys); the networks use the tuned ``postprocessing``.
    """
    methods = {**baselines, "attention_unet": variants[params["tta"]["use"]]}
    binary = {**postprocessing, "method": "distance", "threshold": 0.5}
    return {
        method: (
            methods[method],
            binary if method in ("otsu", "multilevel") else dict(postprocessing),
        )
        for method in METHOD_NAMES
        if method in methods
    }


def compare_methods(
    baselines: Mapping[str, Mapping[str, np.ndarray]],
    variants: Mapping[str, Mapping[str, np.ndarray]],
    preprocessed: Mapping[str, np.ndarray],
    split: pd.DataFrame,
    postprocessing: Mapping[str, Any],
    params: Mapping[str, Any],
) -> tuple[pd.DataFrame, str, dict[str, dict]]:
    """The paper's Table 2 on our test split: each method's PA, MPA, MIoU (pooled, %), nucleus
    IoU and the DSB instance score.

    Thresholding baselines give 0/1 maps, so their nuclei are separated on the distance map
    (a flat probability has no relief); the networks use the tuned ``postprocessing``.

    Returns:
        ``(table, markdown, metrics)``: the table (one row per method), the same as a
        markdown document, and ``{"<method>.<score>": ...}`` for MLflow.
    """
    modality = split.set_index("image_id")["modality"].to_dict()
    rows = []
    for method, (probabilities, settings) in _compared_methods(
        baselines, variants, postprocessing, params
    ).items():
        _, summary = _score(*_instances(probabilities, settings), preprocessed, modality)
        overall = summary.set_index("modality").loc["all"]
        rows.append(
            {
                "method": method,
                "description": _label(method, params),
                "images": int(overall["images"]),
                **{s: float(overall[s]) for s in _TABLE_SCORES},
            }
        )
    table = pd.DataFrame(rows)
    metrics = {
        f"{row['method']}.{score}": {"value": row[score], "step": 0}
        for row in rows
        for score in _TABLE_SCORES
    }
    return table, _markdown(table), metrics


_TABLE_SCORES = (
    "pa_pooled",
    "mpa_pooled",
    "miou_pooled",
    "nucleus_iou_pooled",
    "miou_per_image",
    "dsb_score",
    "f1",
)


def _markdown(table: pd.DataFrame) -> str:
    """The comparison as a markdown table, scores in % like the paper's Table 2."""
    header = (
        "| Method | PA (%) | MPA (%) | MIoU (%) | Nucleus IoU (%) | MIoU per image (%) "
        "| DSB score | F1 @ 0.5 |\n|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {r.description} | {100 * r.pa_pooled:.2f} | {100 * r.mpa_pooled:.2f} "
        f"| {100 * r.miou_pooled:.2f} | {100 * r.nucleus_iou_pooled:.2f} "
        f"| {100 * r.miou_per_image:.2f} | {r.dsb_score:.4f} | {r.f1:.4f} |"
        for r in table.itertuples()
    ]
    images = int(table["images"].iloc[0]) if len(table) else 0
    return (
        "# Comparison on the held-out test split (paper Table 2 layout)\n\n"
        f"{images} test images. PA, MPA, MIoU and nucleus IoU pooled over all test pixels "
        "(as the paper); MIoU per image averaged over images; DSB score: the Data Science "
        "Bowl's instance score (mean over IoU thresholds 0.50:0.05:0.95 of TP/(TP+FP+FN)); "
        "F1 of nucleus detection at IoU 0.5.\n\n" + header + "\n".join(lines) + "\n"
    )


def _pick_examples(split: pd.DataFrame, ids: Iterable[str], per_modality: int, seed: int) -> list:
    """``per_modality`` test images of each modality, drawn with ``seed``."""
    test = split[split["image_id"].isin(list(ids))]
    rng = np.random.default_rng(seed)
    chosen = []
    for _, group in sorted(test.groupby("modality")):
        count = min(per_modality, len(group))
        picks = rng.choice(len(group), size=count, replace=False)
        chosen += [(row.image_id, row.modality) for row in group.iloc[sorted(picks)].itertuples()]
    return chosen


def _with_contours(image: np.ndarray, labels: np.ndarray, colour: Sequence[int]) -> np.ndarray:
    """Gray uint8 image as RGB with the instance contours drawn in ``colour``."""
    rgb = np.repeat(image[..., None], 3, axis=2)
    rgb[find_boundaries(labels, mode="inner")] = colour
    return rgb


def plot_comparison_panels(
    baselines: Mapping[str, Mapping[str, np.ndarray]],
    variants: Mapping[str, Mapping[str, np.ndarray]],
    preprocessed: Mapping[str, np.ndarray],
    split: pd.DataFrame,
    postprocessing: Mapping[str, Any],
    params: Mapping[str, Any],
) -> matplotlib.figure.Figure:
    """Paper Fig. 8: for a few test images of each modality, original | each baseline | ours
    | ground truth, every segmentation drawn as nucleus contours over the image."""
    figures = params["figures"]
    methods = _compared_methods(baselines, variants, postprocessing, params)
    examples = _pick_examples(
        split, methods["attention_unet"][0], int(figures["per_modality"]), int(figures["seed"])
    )
    titles = ["original", *[_label(m, params).split(" (")[0] for m in methods], "ground truth"]
    size = float(figures["panel_inches"])
    figure = matplotlib.figure.Figure(
        figsize=(size * len(titles), size * max(1, len(examples))), dpi=int(figures["dpi"])
    )
    axes = figure.subplots(max(1, len(examples)), len(titles), squeeze=False)
    for row, (image_id, modality) in enumerate(examples):
        image = preprocessed[f"{image_id}/image"]
        panels = [np.repeat(image[..., None], 3, axis=2)]
        for probabilities, settings in methods.values():
            labels = separate_instances(probabilities[image_id], **settings)
            panels.append(_with_contours(image, labels, (255, 200, 0)))
        panels.append(_with_contours(image, preprocessed[f"{image_id}/labels"], (0, 255, 0)))
        for column, (panel, title) in enumerate(zip(panels, titles, strict=True)):
            axis = axes[row, column]
            axis.imshow(panel)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title, fontsize=9)
        axes[row, 0].set_ylabel(f"{modality}\n{image_id[:8]}", fontsize=8)
    figure.tight_layout()
    return figure
