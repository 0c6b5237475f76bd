"""Report tables and figures of evaluation (framework-free): the Table-2 markdown and the
Fig. 8 panels."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import matplotlib.figure
import numpy as np
import pandas as pd
from skimage.segmentation import find_boundaries

TABLE_SCORES = (
    "pa_pooled",
    "mpa_pooled",
    "miou_pooled",
    "nucleus_iou_pooled",
    "miou_per_image",
    "dsb_score",
    "f1",
    "area_error",
)


def comparison_markdown(table: pd.DataFrame) -> str:
    """The comparison as a markdown table, scores in % like the paper's Table 2."""
    header = (
        "| Method | PA (%) | MPA (%) | MIoU (%) | Nucleus IoU (%) | MIoU per image (%) "
        "| DSB score | F1 @ 0.5 | Area error (%) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {r.description} | {100 * r.pa_pooled:.2f} | {100 * r.mpa_pooled:.2f} "
        f"| {100 * r.miou_pooled:.2f} | {100 * r.nucleus_iou_pooled:.2f} "
        f"| {100 * r.miou_per_image:.2f} | {r.dsb_score:.4f} | {r.f1:.4f} "
        f"| {100 * r.area_error:+.1f} |"
        for r in table.itertuples()
    ]
    images = int(table["images"].iloc[0]) if len(table) else 0
    return (
        "# Comparison on the held-out test split (paper Table 2 layout)\n\n"
        f"{images} test images, each scored on its own pixel grid against its own labels, "
        "on the instance maps inference writes. PA, MPA, MIoU and nucleus IoU pooled over all "
        "test pixels (as the paper); MIoU per image averaged over images; DSB score: the "
        "Data Science Bowl's instance score (mean over IoU thresholds 0.50:0.05:0.95 of "
        "TP/(TP+FP+FN)); "
        "F1 of nucleus detection at IoU 0.5; area error: mean signed (predicted - true) / true "
        "area of nuclei matched at IoU 0.5 (negative: outlines too tight).\n\n"
        + header
        + "\n".join(lines)
        + "\n"
    )


def pick_examples(split: pd.DataFrame, ids: Iterable[str], per_modality: int, seed: int) -> list:
    """``per_modality`` test images of each modality, drawn with ``seed``."""
    test = split[split["image_id"].isin(list(ids))]
    rng = np.random.default_rng(seed)
    chosen = []
    for _, group in sorted(test.groupby("modality")):
        count = min(per_modality, len(group))
        picks = rng.choice(len(group), size=count, replace=False)
        chosen += [(row.image_id, row.modality) for row in group.iloc[sorted(picks)].itertuples()]
    return chosen


def with_contours(image: np.ndarray, labels: np.ndarray, colour: Sequence[int]) -> np.ndarray:
    """Gray uint8 image as RGB with the instance contours drawn in ``colour``."""
    rgb = np.repeat(image[..., None], 3, axis=2)
    rgb[find_boundaries(labels, mode="inner")] = colour
    return rgb


def panel_figure(
    rows: Sequence[tuple[str, np.ndarray, Sequence[np.ndarray], np.ndarray]],
    titles: Sequence[str],
    panel_inches: float,
    dpi: int,
) -> matplotlib.figure.Figure:
    """Paper Fig. 8: one row per ``(label, gray uint8 image, [label map per method], truth)``:
    the image, each method's nucleus contours (orange) and the true ones (green) over it;
    ``titles`` head the columns (original, each method, ground truth)."""
    figure = matplotlib.figure.Figure(
        figsize=(panel_inches * len(titles), panel_inches * max(1, len(rows))), dpi=dpi
    )
    axes = figure.subplots(max(1, len(rows)), len(titles), squeeze=False)
    for row, (label, image, methods, truth) in enumerate(rows):
        panels = [np.repeat(image[..., None], 3, axis=2)]
        panels += [with_contours(image, labels, (255, 200, 0)) for labels in methods]
        panels.append(with_contours(image, truth, (0, 255, 0)))
        for column, (panel, title) in enumerate(zip(panels, titles, strict=True)):
            axis = axes[row, column]
            axis.imshow(panel)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title, fontsize=9)
        axes[row, 0].set_ylabel(label, fontsize=8)
    figure.tight_layout()
    return figure
