"""Choosing the nucleus separation by measurement: every setting scored by its mean DSB
score over labelled images.

Evaluation runs :func:`search_separation` on the validation split, calibration on a few of
the user's own labelled images. First a grid of the watershed's settings (threshold,
relief, seed depth, smoothing, minimum size), then, with the best of those, each outline
level: the level that draws the nuclei is chosen apart from the one that finds them.
Framework-free; the scoring runs in worker processes (:func:`parallel_map`).
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from nucleus_segmentation import bundle
from nucleus_segmentation.errors import DataProblem, ParameterError
from nucleus_segmentation.imaging.instances import can_separate, score_separations
from nucleus_segmentation.parallel import parallel_map
from nucleus_segmentation.segment import OUTLINE, SEPARATION_KEYS, check_separation

logger = logging.getLogger(__name__)

Item = tuple[np.ndarray, np.ndarray]  # (HxW nucleus probability, HxW true label map)


def labelled_items(
    probabilities: Mapping[str, np.ndarray], ingested: Mapping[str, np.ndarray], what: str
) -> list[Item]:
    """(probability, true labels) of every image of ``probabilities``, labels from the
    ingested bundle; ``what`` names the images in the error when there are none."""
    items = [(p, bundle.field(ingested, k, "labels")) for k, p in probabilities.items()]
    if not items:
        raise DataProblem(f"{what}: no labelled image to tune the separation on")
    return items


def outline_levels(levels: Iterable[Any] | None) -> list[float | None]:
    """The ``outline`` list of a search, checked: null or levels in (0, 1)."""
    if levels is None:
        return []
    if isinstance(levels, str) or not isinstance(levels, Sequence):
        raise ParameterError(f"instances.outline must be a list of levels, got {levels!r}")
    checked = []
    for level in levels:
        if level is not None and not 0 < float(level) < 1:
            raise ParameterError(f"instances.outline: {level!r} is not null or in (0, 1)")
        checked.append(None if level is None else float(level))
    return checked


def score_settings(
    items: list[Item], settings: list[dict[str, Any]], n_workers: Any, column: str, what: str
) -> pd.DataFrame:
    """One row per setting with its mean DSB score over ``items`` in ``column``, best
    first (ties keep the settings' order)."""
    scores = np.array(
        list(
            parallel_map(
                functools.partial(score_separations, settings=settings),
                items,
                n_workers,
                chunksize=1,
                progress=f"{what} ({len(settings)} settings per image)",
            )
        )
    )
    table = pd.DataFrame(settings).assign(**{column: scores.mean(axis=0)}, images=len(items))
    return table.sort_values(column, ascending=False, kind="stable")


def fits(settings: Mapping[str, Any], items: list[Item]) -> bool:
    """Whether a separation can run on ``items``' maps: ``interior`` needs the interior map
    of a boundary model (HxWx2) on every image."""
    return all(can_separate(settings["method"], p) for p, _ in items)


def search_separation(
    items: list[Item],
    search: Mapping[str, Sequence[Any]],
    outlines: Iterable[Any] | None,
    n_workers: Any,
    column: str,
    candidates: Sequence[Mapping[str, Any]] = (),
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The best separation for ``items`` and the table of every setting scored.

    Args:
        items: (probability, labels) pairs, each image on its own grid.
        search: a list of values per ``SEPARATION_KEYS`` key; every combination is scored.
        outlines: outline levels (null: the threshold's contour) tried with the best
            combination.
        n_workers: processes scoring (``auto`` or a number).
        column: the score column's name (``validation_dsb_score``, ...).
        candidates: whole settings scored beside the grid (e.g. the one in use), so the
            result is never worse than them on ``items``; they win ties.

    Returns:
        ``(best, table)``: keyword arguments for ``separate_instances`` and the table, best
        first.
    """
    levels = outline_levels(outlines)
    grid = [
        {**dict(zip(SEPARATION_KEYS, values, strict=True)), OUTLINE: None}
        for values in itertools.product(*(search[k] for k in SEPARATION_KEYS))
    ]
    # Candidates first: on a tie the stable sort keeps them (the one in use is not changed
    # for nothing).
    grid = [check_separation(c, "separation candidate") for c in candidates] + grid
    if not all(fits(s, items) for s in grid):
        # A model without a boundary class has no interior map to seed from.
        skipped = sum(not fits(s, items) for s in grid)
        grid = [s for s in grid if fits(s, items)]
        if skipped:
            logger.info("Skipped %d 'interior' settings: the model has no boundary class", skipped)
        if not grid:
            raise ParameterError(
                "instances.search: only method 'interior', which needs a boundary model"
            )
    table = score_settings(items, grid, n_workers, column, "tuning separation")
    best = check_separation(table.iloc[0][[*SEPARATION_KEYS, OUTLINE]].to_dict())
    redrawn = [
        {**best, OUTLINE: level}
        for level in levels
        if level is not None and level != best["threshold"] and level != best[OUTLINE]
    ]
    if redrawn:
        scored = score_settings(items, redrawn, n_workers, column, "tuning the outline")
        table = pd.concat([table, scored]).sort_values(column, ascending=False, kind="stable")
        best = check_separation(table.iloc[0][[*SEPARATION_KEYS, OUTLINE]].to_dict())
    return best, table.reset_index(drop=True)


def per_modality_min_images(instances: Mapping[str, Any]) -> int | None:
    """``instances.per_modality.min_images``, checked: None (one setting for all images) or
    the validation images a modality needs for a setting of its own (>= 1)."""
    min_images = (instances.get("per_modality") or {}).get("min_images")
    if min_images is not None and int(min_images) < 1:
        raise ParameterError(f"instances.per_modality.min_images must be >= 1, got {min_images}")
    return None if min_images is None else int(min_images)


def search_by_modality(
    items: Mapping[str, Item],
    modality: Mapping[str, str],
    min_images: int,
    pooled: Mapping[str, Any],
    search: Mapping[str, Sequence[Any]],
    outlines: Iterable[Any] | None,
    n_workers: Any,
    column: str,
) -> tuple[dict[str, dict[str, Any]], pd.DataFrame | None]:
    """A separation of its own for every modality with at least ``min_images`` of
    ``items`` (``{image id: item}``; ``modality``: each id's modality), searched like
    :func:`search_separation` on those images only, with ``pooled`` (the setting for all
    images) scored beside it, so a modality's setting is never worse on its images.

    Returns:
        ``(by_modality, table)``: ``{modality: settings}`` and one row per setting scored,
        with its ``modality`` (None when no modality has enough images); modalities with
        fewer images keep ``pooled``.
    """
    by_modality: dict[str, dict[str, Any]] = {}
    tables = []
    for name in sorted({modality[k] for k in items}):
        keys = [k for k in items if modality[k] == name]
        if len(keys) < min_images:
            logger.info(
                "Separation for %s images: %d validation images (< %d), the pooled one",
                name,
                len(keys),
                min_images,
            )
            continue
        best, table = search_separation(
            [items[k] for k in keys], search, outlines, n_workers, column, candidates=[pooled]
        )
        logger.info(
            "Separation for %s images, tuned on %d: %s (DSB score %.4f)",
            name,
            len(keys),
            best,
            table.iloc[0][column],
        )
        by_modality[name] = best
        tables.append(table.assign(modality=name))
    return by_modality, pd.concat(tables, ignore_index=True) if tables else None
