"""Colour handling: bit depth, grayscale conversion and the modality test."""

from __future__ import annotations

import cv2
import numpy as np

FLUORESCENCE = "fluorescence"
BRIGHTFIELD = "brightfield"
STAINED = "stained"
MODALITIES = (FLUORESCENCE, BRIGHTFIELD, STAINED)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as uint8 0..255.

    uint8 passes through unchanged. Wider integer types (16-bit microscopy PNG/TIFF) are
    stretched linearly between their own 0.1 and 99.9 percentiles, because such files rarely
    use the full 0..65535 range (12-bit cameras) and a fixed division would leave them black.
    Floats are taken as 0..1.
    """
    if image.dtype == np.uint8:
        return image
    if np.issubdtype(image.dtype, np.floating):
        return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return stretch_percentiles(image, (0.1, 99.9))


def checked_percentiles(percentiles) -> tuple[float, float]:
    """``percentiles`` as (low, high) floats; ValueError unless 0 <= low < high <= 100."""
    try:
        low, high = (float(p) for p in percentiles)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(
            f"percentiles must be [low, high] with 0 <= low < high <= 100, got {percentiles!r}"
        )
    return low, high


def stretch_percentiles(values: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Any numeric array -> uint8 0..255 of the same shape, linear between its own
    ``percentiles`` (low, high, in 0..100) and clipped outside them; all zeros when the two
    percentiles coincide (a flat image has no contrast to stretch)."""
    values = np.asarray(values, dtype=np.float32)
    low, high = np.percentile(values, checked_percentiles(percentiles))
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    return (np.clip(scaled, 0.0, 255.0) + 0.5).astype(np.uint8)


def drop_alpha(image: np.ndarray) -> np.ndarray:
    """Return an HxW or HxWx3 view: the alpha channel of RGBA, and gray+alpha, is dropped."""
    if image.ndim == 3 and image.shape[2] == 4:
        return image[:, :, :3]
    if image.ndim == 3 and image.shape[2] == 2:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    return image


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """RGB(A) or gray uint8 -> HxW uint8 gray (ITU-R BT.601 luma, as OpenCV computes it)."""
    image = drop_alpha(image)
    if image.ndim == 2:
        return image.copy()
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def classify_modality(
    image: np.ndarray, spread_threshold: float = 15.0, brightness_threshold: float = 127.0
) -> str:
    """Return ``"stained"``, ``"brightfield"`` or ``"fluorescence"`` for a uint8 image.

    The paper's colour test: mean per-pixel channel spread (max - min over R, G, B) above
    ``spread_threshold`` means stained tissue; otherwise a median brightness above
    ``brightness_threshold`` means a bright background (brightfield); else fluorescence.
    """
    # Alpha off first: an opaque 16-bit alpha would set the stretch of the colours.
    image = to_uint8(drop_alpha(image))
    if is_stained(image, spread_threshold):
        return STAINED
    if is_bright_background(image, brightness_threshold):
        return BRIGHTFIELD
    return FLUORESCENCE


def is_bright_background(image: np.ndarray, brightness_threshold: float = 127.0) -> bool:
    """Whether a uint8 gray or colour image's gray median is above ``brightness_threshold``:
    dark nuclei on a light background (brightfield, stained tissue)."""
    gray = image if image.ndim == 2 else to_grayscale(image)
    return float(np.median(gray)) > brightness_threshold


def is_stained(image: np.ndarray, spread_threshold: float = 15.0) -> bool:
    """The paper's colour test on a uint8 image: mean per-pixel channel spread (max - min
    over R, G, B) above ``spread_threshold``; gray images are never stained."""
    image = drop_alpha(image)
    if image.ndim != 3:
        return False
    # Channel by channel: 20x faster than reducing over the last axis, the same mean (a sum
    # of integers, exact in float64).
    channels = [image[..., c] for c in range(image.shape[2])]
    spread = np.maximum.reduce(channels) - np.minimum.reduce(channels)
    return float(spread.mean(dtype=np.float64)) > float(spread_threshold)


def hematoxylin_density(image: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.5)):
    """RGB(A) stained image (uint8, uint16 or float 0..1) -> HxW uint8 hematoxylin density
    (the nuclear stain, from colour deconvolution: ``skimage.color.rgb2hed``), stretched
    between its own ``percentiles``: nuclei bright on a dark background, cytoplasm (eosin)
    dark, where inverted grayscale makes all tissue bright. Integer images are deconvolved
    from their values over the type's maximum (optical density needs the true intensities)."""
    from skimage.color import rgb2hed

    rgb = drop_alpha(image)
    if np.issubdtype(rgb.dtype, np.integer):
        rgb = rgb.astype(np.float64) / np.iinfo(rgb.dtype).max
    return stretch_percentiles(rgb2hed(np.clip(rgb, 0.0, 1.0))[..., 0], percentiles)


def jitter_stains(image: np.ndarray, gains, shifts) -> np.ndarray:
    """A stained RGB(A) image (uint8, uint16 or float 0..1) as if stained more or less
    strongly: colour deconvolution into hematoxylin, eosin and DAB densities (skimage's
    ``hed_from_rgb`` matrix on ``rgb2hed``'s optical-density scale, where hematoxylin in
    stage1_train nuclei is about 0.05 to 0.15), each density times its ``gains`` entry plus
    its ``shifts`` entry, and back to colour through the inverse matrix: the HED jitter of
    Tellez et al. (2019). Unlike ``rgb2hed`` / ``hed2rgb`` the densities are not clipped at
    zero, so gains of 1 and shifts of 0 return the image up to 8-bit rounding. HxWx3 uint8."""
    from skimage.color import hed_from_rgb, rgb_from_hed

    rgb = drop_alpha(image)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"stain jitter needs an RGB image, got shape {image.shape}")
    gains, shifts = np.asarray(gains, dtype=float), np.asarray(shifts, dtype=float)
    if gains.shape != (3,) or shifts.shape != (3,):
        raise ValueError(f"stain jitter needs three gains and three shifts, got {gains}, {shifts}")
    if np.issubdtype(rgb.dtype, np.integer):
        rgb = rgb.astype(np.float64) / np.iinfo(rgb.dtype).max
    log_floor = np.log(1e-6)  # rgb2hed's scale: density 1 is a transmission of 1e-6
    density = np.log(np.clip(rgb, 1e-6, 1.0)) / log_floor
    stains = (density @ hed_from_rgb) * gains + shifts
    rgb = np.exp((stains @ rgb_from_hed) * log_floor)
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def invert_bright_background(gray: np.ndarray, brightness_threshold: float = 127.0) -> np.ndarray:
    """Invert a uint8 gray image whose median is above ``brightness_threshold``.

    Brightfield and stained images show dark nuclei on a light background; inverting them
    makes nuclei bright on dark in every modality, which is what fluorescence (80 % of the
    training set) teaches the network. The test uses only the image, so it applies equally
    to a user's own images at inference time.
    """
    if is_bright_background(gray, brightness_threshold):
        return 255 - gray
    return gray.copy()


PROFILE_COLUMNS = ("gray_mean", "gray_std", "gray_p99", "red_mean", "green_mean", "blue_mean")


def intensity_profile(image: np.ndarray) -> dict[str, float]:
    """What an acquisition looks like, in uint8 gray levels (0..255): the mean, standard
    deviation and 99th percentile of the gray image, and the mean of each colour channel
    (all three equal the gray mean for a gray image). Tiles of one acquisition (same
    instrument, sample and settings) share these closely; other acquisitions rarely do."""
    image = drop_alpha(to_uint8(image))
    gray = to_grayscale(image).astype(np.float32)
    channels = (
        [float(image[..., c].mean()) for c in range(3)]
        if image.ndim == 3
        else [float(gray.mean())] * 3
    )
    return dict(
        zip(
            PROFILE_COLUMNS,
            [float(gray.mean()), float(gray.std()), float(np.percentile(gray, 99)), *channels],
            strict=True,
        )
    )
