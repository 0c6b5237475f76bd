"""The paper's preprocessing chain (section 3.2.1) as one configurable pure function."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nucleus_segmentation.errors import ParameterError
from nucleus_segmentation.imaging.colour import (
    checked_percentiles,
    drop_alpha,
    hematoxylin_density,
    invert_bright_background,
    is_bright_background,
    is_stained,
    to_grayscale,
    to_uint8,
)
from nucleus_segmentation.imaging.enhance import (
    EQUALIZE_METHODS,
    equalize_histogram,
    gaussian_smooth,
)
from nucleus_segmentation.imaging.geometry import resize_image

STAIN_REPRESENTATIONS = ("gray", "hematoxylin", "rgb")


def preprocess_image(
    image: np.ndarray,
    params: Mapping[str, Any],
    size: tuple[int, int] | None = None,
    interpolation: str = "auto",
) -> np.ndarray:
    """Raw image (HxW or HxWxC, uint8/uint16) -> preprocessed HxW uint8 network input
    (HxWx3 with ``stain.representation`` ``rgb``: :func:`network_channels`).

    Steps, each but resizing switched by ``params[step]["enabled"]``: grayscale (always for
    ``gray``; for stained colour images ``stain.representation`` ``hematoxylin`` takes the
    hematoxylin density instead, already bright nuclei on dark, so not inverted, and ``rgb``
    keeps the colour image, each channel then prepared as a gray image is, while every other
    image goes gray and is repeated into three equal channels), ``invert`` bright
    backgrounds (decided on the gray image, all channels alike), resize to ``size`` =
    (height, width) when given (the scale policy of :mod:`nucleus_segmentation.segment`
    decides it), ``equalize`` (``method`` global, clahe or percentile), ``smooth`` (Gaussian
    ``kernel_size``, ``sigma``). Grayscale is taken before resizing: both are linear, so the
    order does not change the result, and resizing one channel is three times cheaper (colour
    input resizes its three).
    """
    raw, image = image, to_uint8(image)
    stain = dict(params.get("stain") or {})
    representation = stain_representation(params)
    if representation not in STAIN_REPRESENTATIONS:
        raise ParameterError(
            f"preprocessing.stain.representation must be one of {STAIN_REPRESENTATIONS}, "
            f"got {representation!r}"
        )
    equalize = params["equalize"]
    if equalize["method"] not in EQUALIZE_METHODS:
        raise ParameterError(
            f"preprocessing.equalize.method must be one of {EQUALIZE_METHODS}, "
            f"got {equalize['method']!r}"
        )
    invert = params["invert"]
    stained = representation != "gray" and is_stained(image, stain.get("spread_threshold", 15.0))
    if representation == "hematoxylin" and stained:
        gray = hematoxylin_density(raw)  # from the file's own values, not the 8-bit stretch
    elif representation == "rgb" and stained:
        gray = drop_alpha(image).copy()  # HxWx3, each channel prepared as a gray image
        if invert["enabled"] and is_bright_background(gray, invert["brightness_threshold"]):
            gray = 255 - gray
    else:
        gray = to_grayscale(image)
        if invert["enabled"]:
            gray = invert_bright_background(gray, invert["brightness_threshold"])
    if size is not None and tuple(size) != gray.shape[:2]:
        gray = resize_image(gray, tuple(size), interpolation)
    if equalize["enabled"]:
        gray = _per_channel(
            lambda plane: equalize_histogram(
                plane,
                equalize["method"],
                equalize["clip_limit"],
                equalize["tile_grid"],
                _percentiles(equalize),
            ),
            gray,
        )
    smooth = params["smooth"]
    if smooth["enabled"]:
        gray = gaussian_smooth(gray, smooth["kernel_size"], smooth["sigma"])
    if representation == "rgb" and gray.ndim == 2:
        gray = np.repeat(gray[:, :, None], 3, axis=2)
    return gray


def network_channels(params: Mapping[str, Any]) -> int:
    """Channels of what :func:`preprocess_image` makes with the ``preprocessing`` parameters
    ``params``, the network's input channels: 3 for ``stain.representation: rgb``, else 1."""
    return 3 if stain_representation(params) == "rgb" else 1


def stain_representation(params: Mapping[str, Any]) -> str:
    """``stain.representation`` of the ``preprocessing`` parameters ``params``; ``gray`` for
    settings written before it existed."""
    return str((params.get("stain") or {}).get("representation", "gray"))


def _per_channel(step, image: np.ndarray) -> np.ndarray:
    """``step`` (HxW uint8 -> HxW uint8) on an HxW image, or on each channel of an HxWxC one."""
    if image.ndim == 2:
        return step(image)
    return np.stack([step(np.ascontiguousarray(image[:, :, c])) for c in range(image.shape[2])], 2)


def _percentiles(equalize: Mapping[str, Any]) -> tuple[float, float]:
    """``equalize.percentiles`` as (low, high), checked: 0 <= low < high <= 100. Settings
    written before the percentile method existed have none; they get StarDist's 1 / 99.8."""
    try:
        return checked_percentiles(equalize.get("percentiles", (1.0, 99.8)))
    except ValueError as error:
        raise ParameterError(f"preprocessing.equalize.{error}") from None


def effective_preprocessing(params: Mapping[str, Any]) -> dict[str, Any]:
    """What of the ``preprocessing`` parameters changes the network input, flattened to
    ``{"equalize.method": "percentile", ...}`` (JSON-able values): settings of a switched-off
    step or of another method are left out (CLAHE's clip limit means nothing to the
    percentile stretch), so two parameter sets that prepare every image alike compare equal."""
    out: dict[str, Any] = {}
    stain = dict(params.get("stain") or {})
    out["stain.representation"] = stain_representation(params)
    if out["stain.representation"] != "gray":
        out["stain.spread_threshold"] = float(stain.get("spread_threshold", 15.0))
    invert, equalize, smooth = params["invert"], params["equalize"], params["smooth"]
    out["invert.enabled"] = bool(invert["enabled"])
    if invert["enabled"]:
        out["invert.brightness_threshold"] = float(invert["brightness_threshold"])
    out["equalize.enabled"] = bool(equalize["enabled"])
    if equalize["enabled"]:
        out["equalize.method"] = str(equalize["method"])
        if equalize["method"] == "clahe":
            out["equalize.clip_limit"] = float(equalize["clip_limit"])
            out["equalize.tile_grid"] = int(equalize["tile_grid"])
        elif equalize["method"] == "percentile":
            out["equalize.percentiles"] = list(_percentiles(equalize))
    out["smooth.enabled"] = bool(smooth["enabled"])
    if smooth["enabled"]:
        out["smooth.kernel_size"] = int(smooth["kernel_size"])
        out["smooth.sigma"] = float(smooth["sigma"])
    return out
