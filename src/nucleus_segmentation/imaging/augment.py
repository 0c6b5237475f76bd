"""The paper's offline augmentation, as pure functions of an explicit random generator.

Every geometric step (random crop, three-corner affine "shape perturbation", elastic
deformation, flips) is folded into one sampling map, so each output pixel is interpolated
once (no accumulated blur) and image and label map are warped by exactly the same map:
bilinear for the image, nearest neighbour for labels (ids must never be averaged).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from nucleus_segmentation.errors import ParameterError, refuse_unknown_keys


@dataclass(frozen=True)
class AugmentConfig:
    """What one augmented copy draws. Sizes in pixels, fractions of the crop side.

    output_size: side of the square output crop.
    crop_scale: (min, max) crop side as a fraction of the shorter image side; the crop is
        resized to ``output_size``, so values other than output_size / side zoom. Used
        when ``zoom_range`` is None (the paper's protocol on 512x512 images).
    zoom_range: (min, max) magnification of the crop, drawn log-uniformly: the crop side is
        ``output_size / zoom`` source pixels (at most the shorter image side), so nuclei keep
        their size in pixels up to this jitter. For images kept on their own grid (the
        ``native`` scale policy), where a relative crop would zoom small images in and
        large ones out.
    flip_probability: chance of a horizontal flip, and independently of a vertical flip.
    gain_range, offset_range: gray perturbation v -> v * gain + offset on the 0..1 scale.
    corner_shift: largest shift of each of the three corners (top-left, top-right,
        bottom-left) in the affine shape perturbation, as a fraction of the crop side.
    elastic_alpha: RMS displacement of the elastic deformation, in output pixels.
    elastic_sigma: smoothness (Gaussian sigma, output pixels) of the displacement field.
    quality_perturbation: imaging-quality jitter after the gray perturbation (off by
        default): with ``blur_probability`` a Gaussian blur of sigma U(``blur_sigma_range``)
        pixels (focus, optics), a gamma curve v -> v ** gamma with gamma log-uniform in
        ``gamma_range`` (contrast), then Gaussian noise of standard deviation
        U(``noise_std_range``) on the 0..1 scale (signal to noise). Drawn after every other
        step, so copies without it are unchanged.
    """

    output_size: int = 256
    crop_scale: tuple[float, float] = (0.4, 0.6)
    zoom_range: tuple[float, float] | None = None
    flip_probability: float = 0.5
    gain_range: tuple[float, float] = (0.8, 1.2)
    offset_range: tuple[float, float] = (-0.2, 0.2)
    corner_shift: float = 0.05
    elastic_alpha: float = 4.0
    elastic_sigma: float = 10.0
    crop: bool = True
    flip: bool = True
    gray_perturbation: bool = True
    shape_perturbation: bool = True
    elastic: bool = True
    quality_perturbation: bool = False
    blur_probability: float = 0.3
    blur_sigma_range: tuple[float, float] = (0.5, 1.5)
    gamma_range: tuple[float, float] = (0.7, 1.4)
    noise_std_range: tuple[float, float] = (0.0, 0.03)

    @classmethod
    def from_params(cls, params: dict) -> AugmentConfig:
        """Build from the ``augmentation.transforms`` parameter mapping (unknown keys refused)."""
        refuse_unknown_keys(params, cls.__dataclass_fields__, "augmentation.transforms")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        zoom = values.get("zoom_range")
        if zoom is not None and (len(zoom) != 2 or not 0 < zoom[0] <= zoom[1]):
            raise ParameterError(f"zoom_range must be [min, max] with 0 < min <= max, got {zoom}")
        for name, lowest in (("blur_sigma_range", 0.0), ("gamma_range", 0.0)):
            pair = values.get(name, getattr(cls, name))
            if not _is_pair(pair) or not lowest < float(pair[0]) <= float(pair[1]):
                raise ParameterError(
                    f"augmentation.transforms.{name} must be [low, high] with "
                    f"{lowest} < low <= high, got {_shown(pair)}"
                )
        noise = values.get("noise_std_range", cls.noise_std_range)
        if not _is_pair(noise) or not 0 <= float(noise[0]) <= float(noise[1]):
            raise ParameterError(
                "augmentation.transforms.noise_std_range must be [low, high] with "
                f"0 <= low <= high, got {_shown(noise)}"
            )
        chance = values.get("blur_probability", cls.blur_probability)
        if not isinstance(chance, int | float) or not 0 <= chance <= 1:
            raise ParameterError(
                f"augmentation.transforms.blur_probability must be in [0, 1], got {chance}"
            )
        return cls(**values)


def _is_pair(value: object) -> bool:
    """Whether a setting is two numbers (a [low, high] range)."""
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    )


def _shown(value: object) -> object:
    """A setting as the user wrote it (lists became tuples when read)."""
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class StainJitter:
    """HED stain jitter of stained training images (``augmentation.stain_jitter``): each copy
    of an image whose modality is in ``modalities`` is made from the raw colour image with
    its hematoxylin, eosin and DAB densities each times U(``gain_range``) plus
    U(``shift_range``) (see :func:`~nucleus_segmentation.imaging.colour.jitter_stains`), then
    preprocessed like any image, then augmented geometrically. Off by default."""

    enabled: bool = False
    modalities: tuple[str, ...] = ("stained",)
    gain_range: tuple[float, float] = (0.8, 1.2)
    shift_range: tuple[float, float] = (-0.01, 0.01)

    @classmethod
    def from_params(cls, params: dict | None) -> StainJitter:
        """Build from ``augmentation.stain_jitter`` (absent: off); bad settings stop with a
        ParameterError naming the setting."""
        params = dict(params or {})
        refuse_unknown_keys(params, cls.__dataclass_fields__, "augmentation.stain_jitter")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        for name in ("gain_range", "shift_range"):
            pair = values.get(name, getattr(cls, name))
            if len(pair) != 2 or not float(pair[0]) <= float(pair[1]):
                raise ParameterError(
                    f"augmentation.stain_jitter.{name} must be [low, high] with low <= high, "
                    f"got {_shown(pair)}"
                )
        if float(values.get("gain_range", cls.gain_range)[0]) <= 0:
            raise ParameterError("augmentation.stain_jitter.gain_range must stay above 0")
        return cls(**values)

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(gains, shifts) for the three stains of one copy."""
        return rng.uniform(*self.gain_range, size=3), rng.uniform(*self.shift_range, size=3)


def sample_rng(seed: int, image_id: str, copy_index: int) -> np.random.Generator:
    """Generator for one (image, copy): depends on the seed, the id and the copy only, so the
    result does not change with worker count, ordering or which other images are present."""
    return np.random.default_rng([int(seed), zlib.crc32(image_id.encode()), int(copy_index)])


def _sampling_map(
    shape: tuple[int, int], config: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, bool, bool]:
    """Source coordinates (map_x, map_y) for every output pixel, plus the two flip flags."""
    height, width = shape
    size = config.output_size
    # Random crop: a square window of the source, later resized to size x size.
    if config.zoom_range is not None:
        low, high = np.log(config.zoom_range[0]), np.log(config.zoom_range[1])
        side = size / float(np.exp(rng.uniform(low, high)))
    else:
        side = min(height, width) * rng.uniform(*config.crop_scale)
    if not config.crop:
        side = float(min(height, width))
    side = max(1.0, min(side, float(min(height, width))))
    x0 = rng.uniform(0.0, width - side) if config.crop else (width - side) / 2
    y0 = rng.uniform(0.0, height - side) if config.crop else (height - side) / 2
    flip_h = bool(rng.random() < config.flip_probability) and config.flip
    flip_v = bool(rng.random() < config.flip_probability) and config.flip
    # Shape perturbation: the crop's three corners go to randomly displaced output corners;
    # the affine through those three pairs maps output -> source.
    shift = rng.uniform(-config.corner_shift, config.corner_shift, size=(3, 2)) * size
    if not config.shape_perturbation:
        shift[:] = 0.0
    last = size - 1.0
    out_corners = np.float32([[0, 0], [last, 0], [0, last]]) + shift.astype(np.float32)
    src_last = side - 1.0
    src_corners = np.float32([[x0, y0], [x0 + src_last, y0], [x0, y0 + src_last]])
    to_source = cv2.getAffineTransform(out_corners, src_corners)
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32)
    if config.elastic and config.elastic_alpha > 0:
        # Elastic deformation (U-Net paper): a smooth random displacement of output pixels.
        for grid in (grid_x, grid_y):
            noise = rng.uniform(-1.0, 1.0, size=(size, size)).astype(np.float32)
            field = cv2.GaussianBlur(noise, (0, 0), config.elastic_sigma)
            grid += field * (config.elastic_alpha / (float(field.std()) + 1e-8))
    map_x = to_source[0, 0] * grid_x + to_source[0, 1] * grid_y + to_source[0, 2]
    map_y = to_source[1, 0] * grid_x + to_source[1, 1] * grid_y + to_source[1, 2]
    return map_x.astype(np.float32), map_y.astype(np.float32), flip_h, flip_v


def augment_sample(
    image: np.ndarray, labels: np.ndarray, config: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One augmented copy of a preprocessed (image, label map) pair.

    Args:
        image: HxW uint8 gray image (or HxWxC: every channel moved alike).
        labels: HxW uint16 instance label map of the same size.
        config: what to draw.
        rng: the generator of this copy (see :func:`sample_rng`).

    Returns:
        (image, labels) of ``output_size`` x ``output_size``, uint8 and uint16; new arrays.
    """
    if image.shape[:2] != labels.shape[:2]:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ in size")
    # Draw the gray perturbation first so it is the same whatever the geometry settings.
    gain = rng.uniform(*config.gain_range)
    offset = rng.uniform(*config.offset_range)
    map_x, map_y, flip_h, flip_v = _sampling_map(image.shape[:2], config, rng)
    # Reflected borders continue the tissue (and a nucleus cut by the edge) past the edge.
    out_image = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    out_labels = cv2.remap(
        labels, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101
    )
    if flip_h:
        out_image, out_labels = out_image[:, ::-1], out_labels[:, ::-1]
    if flip_v:
        out_image, out_labels = out_image[::-1], out_labels[::-1]
    if config.gray_perturbation:
        out_image = perturb_gray(out_image, gain, offset)
    if config.quality_perturbation:
        out_image = perturb_quality(np.ascontiguousarray(out_image), config, rng)
    return np.ascontiguousarray(out_image), np.ascontiguousarray(out_labels)


def perturb_quality(
    image: np.ndarray, config: AugmentConfig, rng: np.random.Generator
) -> np.ndarray:
    """uint8 image -> blurred (sometimes), gamma-curved and noisy copy, uint8 (see
    :class:`AugmentConfig`, ``quality_perturbation``). Every draw is made whether or not
    its step changes the image, so one setting does not shift the others' draws."""
    blur = bool(rng.random() < config.blur_probability)
    sigma = rng.uniform(*config.blur_sigma_range)
    low, high = np.log(config.gamma_range[0]), np.log(config.gamma_range[1])
    gamma = float(np.exp(rng.uniform(low, high)))
    noise_std = rng.uniform(*config.noise_std_range)
    noise = rng.standard_normal(image.shape[:2]).astype(np.float32) * noise_std
    if image.ndim == 3:  # one noise field for every channel, as a camera's
        noise = noise[:, :, None]
    values = image.astype(np.float32) / 255.0
    if blur:
        values = cv2.GaussianBlur(values, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    values = np.power(np.clip(values, 0.0, 1.0), gamma) + noise
    return (np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def perturb_gray(image: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """uint8 image -> clip(v * gain + offset) on the 0..1 scale, back to uint8."""
    scaled = image.astype(np.float32) * (gain / 255.0) + offset
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
