"""The one path from an image to nuclei.

Training's per-epoch validation, evaluation and inference all call :func:`nucleus_probability`
and :func:`segment_image`, so a score is only ever measured on the path users run:

raw image (any size, 8/16-bit, gray/RGB/RGBA)
  -> the trained preprocessing (grayscale, inversion, equalization, smoothing)
  -> the scale policy: the image's own grid (``native``, optionally times ``factor``) or a
     fixed size (``fixed``: the paper's 512x512); ``native`` predicts an image again,
     rescaled, when the nuclei of the first prediction are outside the sizes the network
     is left to (``scale.nucleus_area``: far larger than DSB's, by default)
  -> whole or tiled prediction, padded to the model's output stride
  -> test-time flips and scales, probabilities averaged
  -> nucleus probability back on the image's own pixel grid (with a boundary class: nucleus
     and interior probability, HxWx2)
  -> separated instances (marker-controlled watershed, settings tuned on validation; a
     tuned file may hold settings per modality, chosen by the image's colour test).

Settings are one parameter group, ``segmentation`` (``conf/base/parameters.yml``), read by
:meth:`SegmentationSettings.from_params`. Nothing here imports Kedro; the model is anything
with Keras' ``predict_on_batch`` taking (B, H, W, 1) float32 in 0..1 (3 channels for
``preprocessing.stain.representation: rgb``) and returning
(B, H, W, K) class probabilities: K = 2 (background, nucleus) or K = 3 (background, nucleus
interior, nucleus boundary; ``training.targets.kind: boundary``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from nucleus_segmentation import bundle
from nucleus_segmentation.errors import DataProblem, ParameterError, refuse_unknown_keys
from nucleus_segmentation.imaging.colour import MODALITIES, classify_modality
from nucleus_segmentation.imaging.geometry import resize_image, resize_labels
from nucleus_segmentation.imaging.instances import METHODS, separate_instances
from nucleus_segmentation.imaging.masks import median_nucleus_area as label_median_area
from nucleus_segmentation.imaging.preprocess import (
    effective_preprocessing,
    network_channels,
    preprocess_image,
    stain_representation,
)
from nucleus_segmentation.imaging.targets import nucleus_maps
from nucleus_segmentation.imaging.tiling import predict_tiled
from nucleus_segmentation.model.folding import for_prediction
from nucleus_segmentation.model.precision import PRECISIONS
from nucleus_segmentation.model.predict import FLIPS, output_stride, predict_probabilities
from nucleus_segmentation.progress import track

logger = logging.getLogger(__name__)
SCALE_MODES = ("native", "fixed")
SEPARATION_KEYS = ("threshold", "method", "seed_depth", "smoothing", "min_size")
OUTLINE = "outline"  # optional: the level the extent is drawn at (None: the threshold)
BY_MODALITY = "by_modality"  # optional: {modality: settings} tuned on that modality's images
MODALITY_RULE = "modality_rule"  # with it: the colour test's thresholds (classify_modality)
# Optional: the segmentation settings (scale policy, TTA) of the probabilities a plan was
# tuned on (files tuned before 2026-12-06 lack it); inference warns when its own differ.
TUNED_ON = "tuned_on"
# The watershed that measures nucleus size for the scale policy's nucleus_area: the
# untuned defaults of segmentation.separation.
SIZE_PROBE = {"threshold": 0.5, "method": "distance", "seed_depth": 1.0, "smoothing": 1.0}


def _numbers(values: Any, name: str, expected: str, count: int = 2) -> list[float | None]:
    """``values`` (a list from the YAML) as floats, ``None`` kept; a ParameterError naming
    ``segmentation.scale.<name>`` when they are not ``count`` positive numbers."""
    problem = ParameterError(f"segmentation.scale.{name} must be {expected}, got {values!r}")
    if not isinstance(values, (list, tuple)):
        raise problem
    try:
        numbers = [None if v is None else float(v) for v in values]
    except (TypeError, ValueError):
        raise problem from None
    if len(numbers) != count or any(v is not None and not v > 0 for v in numbers):
        raise problem
    return numbers


@dataclass(frozen=True)
class ScalePolicy:
    """Where the network sees an image: the same rule in training, evaluation and inference.

    mode: ``native`` keeps the image's own pixel grid, resized isotropically by ``factor``
        (> 1 when a user's nuclei are much smaller in pixels than DSB's, < 1 when larger);
        ``fixed`` resizes every image to ``size`` = (height, width), whatever its aspect
        ratio (the paper's protocol, ``--env paper``).
    interpolation: for the image (labels always nearest neighbour): auto | area | linear |
        cubic; the probability goes back to the image's grid bilinearly.
    nucleus_area: ``native`` only, at prediction (not the training data): ``(low, high)``,
        the median nucleus area in pixels at the network's scale that an image is left at;
        an image whose nuclei, found by a first prediction at ``factor``
        (:func:`median_nucleus_area`), fall outside is predicted again at the factor that
        brings its median nucleus to ``target_area``, limited to ``factor_range``
        (:meth:`adapted_factor`). ``None`` on a side: that side is not adapted.
    """

    mode: str = "native"
    factor: float = 1.0
    size: tuple[int, int] = (512, 512)
    interpolation: str = "auto"
    nucleus_area: tuple[float | None, float | None] = (150.0, 2500.0)
    target_area: float = 300.0
    factor_range: tuple[float, float] = (0.25, 2.0)

    def __post_init__(self):
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        if self.mode not in SCALE_MODES:
            raise ParameterError(f"segmentation.scale.mode must be one of {SCALE_MODES}")
        if not float(self.factor) > 0:
            raise ParameterError(f"segmentation.scale.factor must be positive, got {self.factor}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ParameterError(f"segmentation.scale.size must be [height, width], {self.size}")
        low, high = _numbers(
            self.nucleus_area, "nucleus_area", "[low, high], each a positive number or null"
        )
        lowest, highest = _numbers(
            self.factor_range, "factor_range", "[lowest, highest], positive numbers"
        )
        (target,) = _numbers([self.target_area], "target_area", "a positive number of pixels", 1)
        if lowest is None or highest is None or lowest > highest:
            raise ParameterError(
                "segmentation.scale.factor_range must be [lowest, highest] with lowest <= "
                f"highest, got {[lowest, highest]}"
            )
        if low is not None and high is not None and low >= high:
            raise ParameterError(
                f"segmentation.scale.nucleus_area must be [low, high] with low < high, got "
                f"{[low, high]}"
            )
        if target is None or not (low or 0.0) <= target <= (high or math.inf):
            raise ParameterError(
                f"segmentation.scale.target_area ({target}) must be a number of pixels in "
                f"nucleus_area {[low, high]}"
            )
        object.__setattr__(self, "nucleus_area", (low, high))
        object.__setattr__(self, "target_area", target)
        object.__setattr__(self, "factor_range", (lowest, highest))
        if self.adapts and not lowest <= float(self.factor) <= highest:
            raise ParameterError(
                f"segmentation.scale.factor ({self.factor:g}) must lie in factor_range "
                f"{[lowest, highest]} while nucleus_area adapts images (or set nucleus_area "
                "to [null, null])"
            )

    def network_shape(self, shape: Sequence[int]) -> tuple[int, int]:
        """(height, width) the network sees for an image of ``shape`` (HxW...)."""
        if self.mode == "fixed":
            return self.size
        if self.factor == 1.0:
            return int(shape[0]), int(shape[1])
        return max(1, round(shape[0] * self.factor)), max(1, round(shape[1] * self.factor))

    @property
    def adapts(self) -> bool:
        """Whether an image may be predicted again at another factor (``nucleus_area``)."""
        return self.mode == "native" and self.nucleus_area != (None, None)

    def adapted_factor(self, area: float | None) -> float | None:
        """The factor to predict again at, for an image whose median nucleus covers ``area``
        pixels of its own grid after a prediction at ``factor`` (``None``: no nucleus);
        ``None`` when the image stays at ``factor`` (its nuclei within ``nucleus_area`` at
        the network's scale, or the limits of ``factor_range`` leave it there)."""
        if not self.adapts or not area:
            return None
        low, high = self.nucleus_area
        seen = area * self.factor**2  # pixels at the network's scale
        if (low is None or seen >= low) and (high is None or seen <= high):
            return None
        lowest, highest = self.factor_range
        factor = min(highest, max(lowest, math.sqrt(self.target_area / area)))
        if math.isclose(factor, self.factor, rel_tol=0.02):
            return None  # the range pins it where it was
        return factor


@dataclass(frozen=True)
class SegmentationSettings:
    """Everything between a preprocessed image and its nuclei but the model and separation.

    tile_size: images (at network scale) up to this many pixels a side are predicted whole,
        larger ones in tiles of this size, neighbours sharing at least ``tile_overlap`` px.
    batch_size: tiles per network call.
    tta_scales, tta_flips: test-time variants (every scale x every flip: none | horizontal |
        vertical | both), class probabilities averaged; ``(1.0,)`` x ``("none",)`` is off.
    precision: what the network computes in (``auto`` | ``float32`` | ``mixed_bfloat16``,
        :mod:`nucleus_segmentation.model.precision`); applied to a model once by
        :func:`for_segmentation`.
    """

    scale: ScalePolicy = ScalePolicy()
    tile_size: int = 1024
    tile_overlap: int = 64
    batch_size: int = 4
    tta_scales: tuple[float, ...] = (1.0,)
    tta_flips: tuple[str, ...] = ("none",)
    precision: str = "auto"

    def __post_init__(self):
        object.__setattr__(self, "tta_scales", tuple(float(s) for s in self.tta_scales))
        object.__setattr__(self, "tta_flips", tuple(str(f) for f in self.tta_flips))
        problems = []
        if self.tile_size < 16:
            problems.append(f"tile_size must be at least 16, got {self.tile_size}")
        if not 0 <= self.tile_overlap < self.tile_size:
            problems.append(f"tile_overlap ({self.tile_overlap}) must be in [0, tile_size)")
        if self.batch_size < 1:
            problems.append(f"batch_size must be at least 1, got {self.batch_size}")
        if not self.tta_scales or min(self.tta_scales) <= 0:
            problems.append(f"tta.scales must be positive numbers, got {list(self.tta_scales)}")
        if not self.tta_flips or set(self.tta_flips) - set(FLIPS):
            problems.append(
                f"tta.flips must be a non-empty subset of {sorted(FLIPS)}, got "
                f"{list(self.tta_flips)}"
            )
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if problems:
            raise ParameterError("params:segmentation: " + "; ".join(problems))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SegmentationSettings:
        """From the ``segmentation`` parameter group (its ``separation`` key is read by
        :func:`check_separation`); unknown keys are refused."""
        known = {
            "scale",
            "tile_size",
            "tile_overlap",
            "batch_size",
            "tta",
            "precision",
            "separation",
        }
        refuse_unknown_keys(params, known, "params:segmentation")
        scale = dict(params.get("scale") or {})
        scale_keys = [f.name for f in dataclasses.fields(ScalePolicy)]
        refuse_unknown_keys(scale, scale_keys, "params:segmentation.scale")
        tta = dict(params.get("tta") or {})
        return cls(
            scale=ScalePolicy(**scale),
            tile_size=int(params.get("tile_size", 1024)),
            tile_overlap=int(params.get("tile_overlap", 64)),
            batch_size=int(params.get("batch_size", 4)),
            tta_scales=tuple(tta.get("scales", (1.0,))),
            tta_flips=tuple(tta.get("flips", ("none",))),
            precision=str(params.get("precision", "auto")),
        )

    def with_tta(self, scales: Sequence[float], flips: Sequence[str]) -> SegmentationSettings:
        """The same settings with other test-time variants (for comparing them)."""
        return dataclasses.replace(self, tta_scales=tuple(scales), tta_flips=tuple(flips))

    def to_params(self) -> dict[str, Any]:
        """Plain JSON-able form (for manifests and MLflow)."""
        return {
            "scale": {
                **dataclasses.asdict(self.scale),
                "size": list(self.scale.size),
                "nucleus_area": list(self.scale.nucleus_area),
                "factor_range": list(self.scale.factor_range),
            },
            "tile_size": self.tile_size,
            "tile_overlap": self.tile_overlap,
            "batch_size": self.batch_size,
            "tta": {"scales": list(self.tta_scales), "flips": list(self.tta_flips)},
            "precision": self.precision,
        }


def for_segmentation(model, settings: SegmentationSettings, refresh: bool = False):
    """``model`` ready to predict (:func:`for_prediction`): its BatchNorms folded into their
    convolutions, each decoder upsampling and its convolution computed at low resolution
    (same outputs up to float rounding, less work), computing in ``settings.precision``.
    Call once per model, before segmenting many images with it; ``refresh`` when its weights
    changed since the last call (a model in training)."""
    return for_prediction(model, settings.precision, refresh)


def check_separation(separation: Mapping[str, Any], source: str = "separation") -> dict:
    """Keyword arguments for :func:`separate_instances`, checked: the keys
    ``SEPARATION_KEYS`` and optionally ``outline`` (files tuned before it existed lack it),
    a known ``method``, threshold and outline in (0, 1), positive seed depth."""
    keys = set(separation)
    if keys - {OUTLINE} != set(SEPARATION_KEYS):
        raise DataProblem(
            f"{source}: expected the keys {list(SEPARATION_KEYS)} (and optionally "
            f"{OUTLINE!r}), got {sorted(keys)}"
        )
    settings = {
        "threshold": float(separation["threshold"]),
        "method": str(separation["method"]),
        "seed_depth": float(separation["seed_depth"]),
        "smoothing": float(separation["smoothing"]),
        "min_size": int(separation["min_size"]),
        OUTLINE: _optional_level(separation.get(OUTLINE)),
    }
    if settings["method"] not in METHODS or not 0 < settings["threshold"] < 1:
        raise DataProblem(f"{source}: method must be one of {METHODS}, threshold in (0, 1)")
    if not settings["seed_depth"] > 0:
        raise DataProblem(f"{source}: seed_depth must be positive")
    if settings[OUTLINE] is not None and not 0 < settings[OUTLINE] < 1:
        raise DataProblem(f"{source}: outline must be null or a level in (0, 1)")
    return settings


def check_separation_plan(plan: Mapping[str, Any], source: str = "separation") -> dict:
    """A tuned separation file, checked: one setting (:func:`check_separation`), or that
    setting (for every image) with ``by_modality``, settings of their own for some
    modalities, and ``modality_rule``, the colour test's thresholds that tell an image's
    modality (``ingestion.modality``: ``spread_threshold``, ``brightness_threshold``).
    An optional ``tuned_on`` record (:func:`record_tuning`) is checked to be a mapping and
    left out of the result."""
    extra = {BY_MODALITY, MODALITY_RULE}
    if TUNED_ON in plan and not isinstance(plan[TUNED_ON], Mapping):
        raise DataProblem(f"{source}: {TUNED_ON!r} must map setting names to values")
    checked = check_separation(
        {k: v for k, v in plan.items() if k not in extra | {TUNED_ON}}, source
    )
    if not extra & set(plan):
        return checked
    by, rule = plan.get(BY_MODALITY), plan.get(MODALITY_RULE)
    if not isinstance(by, Mapping) or not isinstance(rule, Mapping):
        raise DataProblem(
            f"{source}: {BY_MODALITY!r} (modality -> settings) and {MODALITY_RULE!r} (the "
            f"colour test's thresholds) come together, got {by!r} and {rule!r}"
        )
    unknown = sorted(set(by) - set(MODALITIES))
    if unknown:
        raise DataProblem(f"{source}: unknown modalities {unknown} (known: {list(MODALITIES)})")
    if set(rule) != {"spread_threshold", "brightness_threshold"}:
        raise DataProblem(
            f"{source}: {MODALITY_RULE} needs spread_threshold and brightness_threshold, "
            f"got {sorted(rule)}"
        )
    return {
        **checked,
        BY_MODALITY: {
            m: check_separation(s, f"{source}: {BY_MODALITY}.{m}") for m, s in by.items()
        },
        MODALITY_RULE: {k: float(v) for k, v in rule.items()},
    }


def probability_settings(settings: SegmentationSettings) -> dict[str, Any]:
    """The settings that shape the probability a separation is tuned on: scale policy and
    test-time augmentation (JSON-able)."""
    params = settings.to_params()
    return {"scale": params["scale"], "tta": params["tta"]}


def record_tuning(plan: Mapping[str, Any], settings: SegmentationSettings) -> dict[str, Any]:
    """A tuned separation ``plan`` with the settings of the probabilities it was tuned on
    (``tuned_on``), which :func:`check_separation_plan` reads past."""
    return {**plan, TUNED_ON: probability_settings(settings)}


def warn_if_tuned_otherwise(
    plan: Mapping[str, Any], settings: SegmentationSettings, source: str
) -> list[str]:
    """Log a warning naming each setting (``scale.<key>``, ``tta.<key>``) that differs
    between the probabilities ``plan`` was tuned on and those ``settings`` predict; returns
    their names (none for a plan that does not record them). ``scale.size`` counts only in
    ``fixed`` mode, the one that uses it."""
    recorded = plan.get(TUNED_ON)
    if not isinstance(recorded, Mapping):
        return []
    now = probability_settings(settings)
    if now["scale"]["mode"] != "fixed":
        now["scale"].pop("size")
    names, changes = [], []
    for group, values in now.items():
        before = recorded.get(group)
        before = before if isinstance(before, Mapping) else {}
        for key, value in values.items():
            if before.get(key) != value:
                names.append(f"{group}.{key}")
                changes.append(f"{group}.{key}: tuned with {before.get(key)!r}, now {value!r}")
    if changes:
        logger.warning(
            "%s was tuned on probabilities predicted with other segmentation settings (%s): "
            "rerun `kedro run --pipeline evaluation` with these settings for a separation "
            "tuned to them",
            source,
            "; ".join(changes),
        )
    return names


def plan_settings(plan: Mapping[str, Any]) -> list[dict]:
    """Every setting of a checked separation plan: the one for all images, then each
    modality's."""
    pooled = {k: v for k, v in plan.items() if k not in (BY_MODALITY, MODALITY_RULE)}
    return [pooled, *plan.get(BY_MODALITY, {}).values()]


def separation_for(plan: Mapping[str, Any], modality: str | None) -> dict:
    """The settings a checked plan gives an image of ``modality`` (its own if it has any,
    else the ones for all images)."""
    return dict(plan.get(BY_MODALITY, {}).get(modality) or plan_settings(plan)[0])


def bundle_modalities(
    ingested: Mapping[str, np.ndarray], ids: Iterable[str], rule: Mapping[str, Any]
) -> dict[str, str]:
    """``{image id: modality}`` of the bundle's raw images ``ids`` by the colour test with
    ``rule`` (a plan's ``modality_rule``), the test inference runs on a user's image."""
    return {k: classify_modality(bundle.field(ingested, k, "image"), **rule) for k in ids}


def image_separation(plan: Mapping[str, Any], image: np.ndarray) -> dict:
    """The settings a separation plan gives this raw image: by its modality (the colour test
    with the plan's ``modality_rule``) where the plan has settings per modality."""
    plan = check_separation_plan(plan)
    if BY_MODALITY not in plan:
        return plan
    return separation_for(plan, classify_modality(image, **plan[MODALITY_RULE]))


def model_classes(model) -> int | None:
    """Output classes of a Keras model (2: background / nucleus, 3: with a boundary class);
    None for anything without an ``output_shape`` (test doubles)."""
    shape = getattr(model, "output_shape", None)
    return int(shape[-1]) if shape else None


def check_model_separation(
    model, separation: Mapping[str, Any], source: str = "instance_postprocessing"
) -> None:
    """Refuse, before any image is read, a separation that seeds from the interior class
    (``method: interior``) for a model that has none."""
    classes = model_classes(model)
    interior = any(s["method"] == "interior" for s in plan_settings(separation))
    if interior and classes is not None and classes != 3:
        raise DataProblem(
            f"{source}: method 'interior' seeds from a boundary class, but this model predicts "
            f"{classes} classes (no boundary): tune the separation for this model with "
            "`kedro run --pipeline evaluation` (same --env) or calibrate it"
        )


def check_model_preprocessing(model, preprocessing: Mapping[str, Any]) -> None:
    """Refuse, before any image is read, to run a model on input prepared otherwise than its
    training data: a model whose input channels differ from what the preprocessing makes
    (gray or colour) is a DataProblem whatever ``match_model`` says; a model saved by this
    project records the settings it was trained with
    (``trained_preprocessing``, see :func:`effective_preprocessing`); any difference is a
    DataProblem naming each setting, unless ``preprocessing.match_model`` is false (a
    deliberate test-time experiment), where it is a warning. Models without a record (saved
    before it existed) are not checked."""
    source = getattr(model, "loaded_from", None)
    name = f"{source.filepath} (version {source.version})" if source else "the model"
    shape = getattr(model, "input_shape", None)
    channels = network_channels(preprocessing)
    if shape is not None and shape[-1] is not None and int(shape[-1]) != channels:
        raise DataProblem(
            f"{name} takes {shape[-1]}-channel input, preprocessing.stain.representation="
            f"{stain_representation(preprocessing)!r} makes "
            f"{channels}: run it with the representation it was trained with"
        )
    trained = getattr(model, "trained_preprocessing", None)
    if trained is None:
        return
    current = effective_preprocessing(preprocessing)
    differ = sorted(k for k in set(trained) | set(current) if trained.get(k) != current.get(k))
    if not differ:
        return
    message = (
        f"{name} was trained with "
        + ", ".join(f"preprocessing.{k}={trained.get(k)!r}" for k in differ)
        + "; this run has "
        + ", ".join(f"preprocessing.{k}={current.get(k)!r}" for k in differ)
        + ": run it with the settings it was trained with (--params preprocessing.<key>="
        "<value>), or set preprocessing.match_model: false to run it on this input anyway"
    )
    if preprocessing.get("match_model", True):
        raise DataProblem(message)
    logger.warning(message)


def _optional_level(value: Any) -> float | None:
    """``outline`` as stored: None (YAML null, JSON null, a NaN from a table) or a float."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return float(value)


def prepare_image(
    image: np.ndarray, preprocessing: Mapping[str, Any], scale: ScalePolicy
) -> np.ndarray:
    """Raw image -> the HxW (HxWx3 for colour input) uint8 network input at the scale
    policy's grid."""
    size = scale.network_shape(image.shape)
    return preprocess_image(image, preprocessing, size, scale.interpolation)


def prepare_labels(labels: np.ndarray, scale: ScalePolicy) -> np.ndarray:
    """A label map (or mask) on the network grid of its image: nearest neighbour, never
    inventing ids. Only training needs this; scores are taken on the image's own grid."""
    return resize_labels(labels, scale.network_shape(labels.shape))


def _flip(array: np.ndarray, flip: str) -> np.ndarray:
    axes = FLIPS[flip]
    return np.ascontiguousarray(np.flip(array, axes)) if axes else array


def _resize_probability(probability: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """HxW float probability to ``shape`` bilinearly (smooth, so the watershed's relief and
    the 0.5 contour move by sub-pixel amounts, not by whole blocks)."""
    if probability.shape[:2] == tuple(shape):
        return probability
    return cv2.resize(probability, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def network_probability(
    model, network_input: np.ndarray, settings: SegmentationSettings
) -> np.ndarray:
    """HxW(x3) uint8 network input -> HxW float32 nucleus probability on the same grid (HxWx2
    nucleus, interior for a boundary model: :func:`nucleus_maps`), averaged over the
    test-time variants; each variant is predicted whole or in tiles."""
    stride = output_stride(model)

    def predict(tiles: Sequence[np.ndarray]) -> list[np.ndarray]:
        probabilities = predict_probabilities(model, tiles, stride, settings.batch_size)
        return [nucleus_maps(p) for p in probabilities]

    shape = network_input.shape[:2]
    total = None
    for factor in settings.tta_scales:
        scaled = network_input
        if factor != 1.0:
            size = (max(stride, round(shape[0] * factor)), max(stride, round(shape[1] * factor)))
            scaled = resize_image(network_input, size, "auto")
        for flip in settings.tta_flips:
            probability = predict_tiled(
                predict,
                _flip(scaled, flip),
                settings.tile_size,
                settings.tile_overlap,
                settings.batch_size,
            )
            resized = _resize_probability(_flip(probability, flip), shape)
            total = resized.astype(np.float32) if total is None else total + resized
    return total / (len(settings.tta_scales) * len(settings.tta_flips))


def median_nucleus_area(probability: np.ndarray) -> float | None:
    """Median area in pixels of the nuclei in a nucleus probability map (HxW, or HxWx2 of a
    boundary model), separated by the untuned watershed (``SIZE_PROBE``: the same for every
    model and tuning, so the scale an image gets never depends on the separation being
    tuned on it); ``None`` when there is none."""
    return label_median_area(separate_instances(probability, **SIZE_PROBE))


def _may_leave_band(scale: ScalePolicy, probability: np.ndarray) -> bool:
    """Whether the median nucleus of ``probability`` may lie outside ``scale.nucleus_area``
    (so :func:`median_nucleus_area` is worth its watershed, ~40 ms a 512x512 map): with no
    lower bound, only where an 8-connected region of the mask is above the upper bound at
    the network's scale, since every nucleus lies within one region (~1 ms)."""
    low, high = scale.nucleus_area
    if low is not None:
        return True
    nucleus = probability[..., 0] if probability.ndim == 3 else probability
    mask = (nucleus > SIZE_PROBE["threshold"]).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return float(stats[1:, cv2.CC_STAT_AREA].max(initial=0)) * scale.factor**2 > high


def _probability_at(
    model,
    image: np.ndarray,
    preprocessing: Mapping[str, Any],
    settings: SegmentationSettings,
    scale: ScalePolicy,
) -> np.ndarray:
    network_input = prepare_image(image, preprocessing, scale)
    probability = network_probability(model, network_input, settings)
    return _resize_probability(probability, image.shape[:2])


def scaled_probability(
    model,
    image: np.ndarray,
    preprocessing: Mapping[str, Any],
    settings: SegmentationSettings,
) -> tuple[np.ndarray, float | None]:
    """:func:`nucleus_probability` and the factor the image was predicted at: the scale
    policy's ``factor``, or the one :meth:`ScalePolicy.adapted_factor` chose for an image
    whose nuclei lie outside ``nucleus_area`` (``None`` for ``fixed``)."""
    scale = settings.scale
    probability = _probability_at(model, image, preprocessing, settings, scale)
    factor = None
    if scale.adapts and _may_leave_band(scale, probability):
        factor = scale.adapted_factor(median_nucleus_area(probability))
    if factor is None:
        return probability, (scale.factor if scale.mode == "native" else None)
    adapted = dataclasses.replace(scale, factor=factor)
    return _probability_at(model, image, preprocessing, settings, adapted), factor


def nucleus_probability(
    model,
    image: np.ndarray,
    preprocessing: Mapping[str, Any],
    settings: SegmentationSettings,
) -> np.ndarray:
    """Raw image (HxW or HxWxC) -> HxW float32 nucleus probability (0..1) on the image's own
    pixel grid (HxWx2 nucleus, interior for a boundary model): preprocessing, scale policy
    (an image with nuclei outside ``scale.nucleus_area`` predicted again, rescaled),
    prediction and test-time variants, and the probability resized back (never the labels,
    so separation runs at the image's scale)."""
    return scaled_probability(model, image, preprocessing, settings)[0]


def segment_image_scaled(
    model,
    image: np.ndarray,
    preprocessing: Mapping[str, Any],
    settings: SegmentationSettings,
    separation: Mapping[str, Any],
) -> tuple[np.ndarray, float | None]:
    """:func:`segment_image` and the factor the image was predicted at
    (:func:`scaled_probability`)."""
    probability, factor = scaled_probability(model, image, preprocessing, settings)
    return separate_instances(probability, **image_separation(separation, image)), factor


def segment_image(
    model,
    image: np.ndarray,
    preprocessing: Mapping[str, Any],
    settings: SegmentationSettings,
    separation: Mapping[str, Any],
) -> np.ndarray:
    """Raw image -> HxW uint16 instance labels (0 background, 1..N nuclei) on its own grid:
    :func:`nucleus_probability`, then :func:`separate_instances` with ``separation`` (a
    plan: the settings for this image's modality where it has them)."""
    return segment_image_scaled(model, image, preprocessing, settings, separation)[0]


def segmentation_probabilities(
    model,
    ingested: Mapping[str, np.ndarray],
    ids: Sequence[str],
    preprocessing: Mapping[str, Any],
    settings: SegmentationSettings,
    description: str,
) -> dict[str, np.ndarray]:
    """``{image id: HxW nucleus probability}`` of the bundle's images ``ids`` through the
    segmentation path (the model in ``settings.precision``), with a progress line."""
    check_model_preprocessing(model, preprocessing)
    model = for_segmentation(model, settings)
    return {
        image_id: nucleus_probability(
            model, bundle.field(ingested, image_id, "image"), preprocessing, settings
        )
        for image_id in track(ids, description)
    }
