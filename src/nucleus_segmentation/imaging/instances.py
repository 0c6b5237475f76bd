"""Touching nuclei as separate instances: marker-controlled watershed."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima
from skimage.segmentation import relabel_sequential, watershed

from nucleus_segmentation.imaging.matching import dsb_score, label_ids

METHODS = ("distance", "probability", "interior")


def separate_instances(
    probability: np.ndarray,
    threshold: float = 0.5,
    method: str = "distance",
    seed_depth: float = 1.0,
    smoothing: float = 1.0,
    min_size: int = 8,
    outline: float | None = None,
) -> np.ndarray:
    """Nucleus probability map -> instance label map (uint16, 0 background, 1..N).

    ``probability``: HxW nucleus probability (0..1), or HxWx2 (nucleus, interior) from a
    model with a boundary class (:func:`nucleus_segmentation.imaging.targets.nucleus_maps`);
    the nucleus channel draws the mask and outline in every method.

    The mask ``probability > threshold`` is split where the distance to the background has
    separate maxima. Seeds are the regional maxima of the distance map (smoothed by
    ``smoothing`` pixels) that rise at least ``seed_depth`` pixels above the saddle towards
    any higher maximum, each connected maximum one seed: two round nuclei touching at a neck
    come out as two, while the flat ridge of an elongated nucleus is a single seed, so a rod
    stays whole. A component without a seed gets one of its own. Objects under ``min_size``
    pixels are dropped (noise), and ids are renumbered consecutively.

    ``method`` picks the relief the seeds are grown on: ``distance`` (the negated distance
    map: borders where the mask narrows) or ``probability`` (the negated nucleus probability,
    smoothed the same way: borders along the network's own low-confidence valleys) or
    ``interior`` (boundary models only: every connected part of the predicted interior
    ``interior > threshold`` inside the mask is one seed, grown along the interior
    probability smoothed by ``smoothing``, so touching nuclei part where the network drew
    their common boundary, whatever the neck; ``seed_depth`` is not used).

    ``outline`` draws each nucleus' extent at its own probability level, apart from the
    ``threshold`` that finds and separates them: the nuclei found at ``threshold`` are
    grown (``outline`` below it) or shrunk (above it) to ``probability > outline``, each
    keeping its id, neighbours meeting along the probability's valleys; no nucleus is
    added or lost (one that never rises above a higher ``outline`` keeps its pixels as
    found; ``min_size`` applies before). ``None``: the outline is the ``threshold``
    contour. Labs draw outlines differently; evaluation (and calibration on a user's own
    labels) tunes this level.
    """
    maps = _Maps(probability)
    return _separate(maps, threshold, method, seed_depth, smoothing, min_size, outline)


class _Maps:
    """The maps one probability map's separations are built from, each computed once and
    kept for the next setting that needs it: the separation search runs dozens of settings
    on every image, and those with one threshold share the mask, components and distance
    map, those with one smoothing the smoothed maps too, the distance and probability
    methods of one depth and smoothing their seeds, settings apart only in ``outline``
    their labels. :meth:`forget` drops them (one threshold's worth at a time)."""

    def __init__(self, probability: np.ndarray):
        self.raw = probability
        self.probability, self.interior = _channels(probability)
        self._kept: dict[tuple, Any] = {}

    def forget(self) -> None:
        self._kept.clear()

    def get(self, key: tuple, make):
        if key not in self._kept:
            self._kept[key] = make()
        return self._kept[key]

    def mask(self, threshold: float) -> np.ndarray:
        return self.get(("mask", threshold), lambda: self.probability > threshold)

    def distance(self, threshold: float, smoothing: float) -> np.ndarray:
        """The distance to the background, smoothed by ``smoothing`` pixels."""

        def make():
            distance = self.get(
                ("distance", threshold, 0),
                lambda: ndimage.distance_transform_edt(self.mask(threshold)),
            )
            return ndimage.gaussian_filter(distance, smoothing) if smoothing > 0 else distance

        return self.get(("distance", threshold, smoothing), make)

    def smoothed(self, channel: str, smoothing: float) -> np.ndarray:
        """The nucleus (``probability``) or ``interior`` channel smoothed, float64."""
        source = self.probability if channel == "probability" else self.interior
        return self.get(
            ("smoothed", channel, smoothing),
            lambda: ndimage.gaussian_filter(source.astype(np.float64), smoothing or 0.0),
        )


def _separate(maps: _Maps, *settings: Any) -> np.ndarray:
    """:func:`separate_instances` of ``maps``' probability with ``settings``, all of its
    arguments after the probability in its order (:func:`_complete` fills them in)."""
    threshold, method, seed_depth, smoothing, min_size, outline = settings
    if method not in METHODS:
        raise ValueError(f"unknown separation method {method!r}: use one of {', '.join(METHODS)}")
    if not seed_depth > 0:
        raise ValueError(f"seed_depth must be > 0 pixels, got {seed_depth!r}")
    if not can_separate(method, maps.raw):
        raise ValueError(
            "separation method 'interior' needs a model with a boundary class "
            "(training.targets.kind: boundary); this one predicts nucleus / background only"
        )
    mask = maps.mask(threshold)
    if not mask.any():
        return np.zeros(maps.probability.shape, dtype=np.uint16)
    depth = None if method == "interior" else seed_depth
    labels = maps.get(
        ("labels", threshold, method, depth, smoothing, min_size),
        lambda: _grown(maps, threshold, method, seed_depth, smoothing, min_size),
    )
    if outline is not None and outline != threshold:
        labels = _redraw(labels, maps.probability, outline)
    relabelled, _, _ = relabel_sequential(labels)
    return relabelled.astype(np.uint16)


def _complete(settings: Mapping[str, Any]) -> list[Any]:
    """The arguments of :func:`separate_instances` after the probability, in its order:
    ``settings`` with its defaults where absent (a TypeError for any other key, as a call
    of it gives)."""
    bound = inspect.signature(separate_instances).bind(None, **settings)
    bound.apply_defaults()
    return list(bound.arguments.values())[1:]


def _grown(
    maps: _Maps, threshold: float, method: str, seed_depth: float, smoothing: float, min_size: int
) -> np.ndarray:
    """The seeds of one setting grown over the mask, objects under ``min_size`` dropped (ids
    not yet consecutive)."""
    mask = maps.mask(threshold)
    if method == "interior":
        relief = maps.smoothed("interior", smoothing)
        markers = maps.get(("seeds", threshold), lambda: _seeds(maps, threshold, None, 0))
    else:
        # The distance and probability reliefs grow the same seeds.
        markers = maps.get(
            ("seeds", threshold, seed_depth, smoothing),
            lambda: _seeds(maps, threshold, seed_depth, smoothing),
        )
        if method == "probability":
            relief = maps.smoothed("probability", smoothing)
        else:
            relief = maps.distance(threshold, smoothing)
    labels = watershed(-relief, markers, mask=mask)
    if min_size > 1:
        sizes = np.bincount(labels.ravel())
        labels = np.where(sizes[labels] < min_size, 0, labels)
    return labels


def _seeds(maps: _Maps, threshold: float, seed_depth: float | None, smoothing: float) -> np.ndarray:
    """The watershed markers of a setting: each connected part of the predicted interior
    inside the mask (``seed_depth`` None: the interior method, so touching nuclei part where
    the network drew their common boundary), or each h-maximum of the smoothed distance
    map; a component of the mask without a seed gets one of its own (its whole area)."""
    mask = maps.mask(threshold)
    eight = np.ones((3, 3), dtype=bool)
    if seed_depth is None:
        markers, count = ndimage.label(mask & (maps.interior > threshold), eight)
    else:
        distance = maps.distance(threshold, smoothing)
        markers, count = ndimage.label(_h_maxima(distance, seed_depth) & mask, eight)
    components, total = maps.get(("components", threshold), lambda: ndimage.label(mask))
    seeded = np.zeros(total + 1, dtype=bool)
    seeded[components[markers > 0]] = True
    unseeded = np.flatnonzero(~seeded[1:]) + 1
    if unseeded.size:
        extra = np.zeros(total + 1, dtype=markers.dtype)
        extra[unseeded] = np.arange(count + 1, count + 1 + unseeded.size)
        markers = np.where(extra[components] > 0, extra[components], markers)
    return markers


def _h_maxima(relief: np.ndarray, depth: float) -> np.ndarray:
    """``skimage.morphology.h_maxima(relief, depth) > 0``, the same pixels, about 30x faster
    for a relief that is >= 0 and 0 on the background (a distance map, smoothed or not).

    h-maxima are the pixels where ``relief`` stands at least ``depth`` above its
    reconstruction by dilation from ``relief - depth`` (skimage's definition, with its
    allowance for float rounding). skimage reconstructs by sorting every pixel (~0.2 s for
    512x512 on a 2-core CPU); here it is the geodesic dilation repeated until nothing
    changes (cv2's 3x3 dilation, clipped by the relief), the same fixed point. Starting
    the background at 0 rather than ``-depth`` starts it at its final value (every
    8-connected region of ``relief > 0`` is surrounded by zeros, and a region reaching
    ``depth`` lifts the zeros around it to 0), so the dilation only has to spread within
    regions: about 10 to 25 rounds for DSB images, instead of one per pixel across the
    background. Any other relief goes to skimage."""
    relief = np.asarray(relief, dtype=np.float64)
    if relief.size == 0 or relief.min() < 0:
        return h_maxima(relief, depth).astype(bool)
    if depth > np.ptp(relief):
        return np.zeros(relief.shape, dtype=bool)
    # skimage's float allowance: the marker lies at least `depth` under the relief.
    allowance = 2 * np.finfo(np.float64).resolution * relief
    reconstruction = np.where(relief > 0, relief - depth - allowance, 0.0)
    square = np.ones((3, 3), dtype=np.uint8)
    while True:
        grown = np.minimum(cv2.dilate(reconstruction, square), relief)
        if np.array_equal(grown, reconstruction):
            return (relief - reconstruction) >= depth
        reconstruction = grown


def can_separate(method: str, probability: np.ndarray) -> bool:
    """Whether separation ``method`` can run on this map: ``interior`` seeds from the interior
    channel, which only a model with a boundary class predicts (HxWx2)."""
    return method != "interior" or np.ndim(probability) == 3


def _channels(probability: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(nucleus HxW, interior HxW or None) of a separation input."""
    probability = np.asarray(probability)
    if probability.ndim == 2:
        return probability, None
    if probability.ndim == 3 and probability.shape[-1] == 2:
        return probability[..., 0], probability[..., 1]
    raise ValueError(
        f"expected an HxW nucleus probability or HxWx2 (nucleus, interior), got {probability.shape}"
    )


def _redraw(labels: np.ndarray, probability: np.ndarray, outline: float) -> np.ndarray:
    """Each nucleus of ``labels`` grown or shrunk to ``probability > outline``, keeping its
    id; neighbours meet along the probability's valleys. A nucleus with no pixel above a
    higher ``outline`` keeps its pixels as found (a nucleus is never lost)."""
    if not 0 < outline < 1:
        raise ValueError(f"outline must be a probability level in (0, 1), got {outline!r}")
    extent = probability > outline
    redrawn = watershed(-probability, np.where(extent, labels, 0), mask=extent)
    lost = np.setdiff1d(label_ids(labels)[0], label_ids(redrawn)[0])
    if lost.size:
        keep = np.isin(labels, lost)
        redrawn[keep] = labels[keep]
    return redrawn


def score_separations(
    item: tuple[np.ndarray, np.ndarray], settings: Sequence[Mapping[str, Any]]
) -> list[float]:
    """DSB score of one (probability, true label map) pair under each separation setting.

    The settings run grouped by threshold, sharing the maps they have in common
    (:class:`_Maps`), one threshold's maps kept at a time; the scores come back in the
    settings' order. A module-level function without Keras imports, so tuning can run it
    in worker processes cheaply.
    """
    probability, truth = item
    maps = _Maps(probability)
    complete = [_complete(s) for s in settings]  # threshold first
    scores: list[float] = [0.0] * len(settings)
    current = None
    for index in sorted(range(len(settings)), key=lambda i: complete[i][0]):
        if complete[index][0] != current:
            maps.forget()
            current = complete[index][0]
        scores[index] = dsb_score(truth, _separate(maps, *complete[index]))
    return scores
