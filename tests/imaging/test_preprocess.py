import cv2
import numpy as np
import pytest

from nucleus_segmentation.imaging.colour import (
    BRIGHTFIELD,
    FLUORESCENCE,
    STAINED,
    classify_modality,
    invert_bright_background,
    to_grayscale,
    to_uint8,
)
from nucleus_segmentation.imaging.enhance import equalize_histogram, gaussian_smooth
from nucleus_segmentation.imaging.geometry import resize_image, resize_labels
from nucleus_segmentation.imaging.preprocess import preprocess_image

PARAMS = {
    "invert": {"enabled": True, "brightness_threshold": 127.0},
    "equalize": {"enabled": True, "method": "global", "clip_limit": 2.0, "tile_grid": 8},
    "smooth": {"enabled": True, "kernel_size": 5, "sigma": 1.0},
}


def test_to_uint8_passes_uint8_and_stretches_16_bit():
    image = np.array([[0, 255]], np.uint8)
    assert to_uint8(image) is image
    wide = np.linspace(1000, 5000, 1001, dtype=np.uint16).reshape(7, 143)
    out = to_uint8(wide)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255


def test_grayscale_of_rgba_equals_opencv_luma_and_gray_passes():
    rgb = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((5, 6), 7, np.uint8)])
    np.testing.assert_array_equal(to_grayscale(rgba), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    gray = rgb[:, :, 0]
    np.testing.assert_array_equal(to_grayscale(gray), gray)


def test_modality_colour_test():
    dark = np.zeros((8, 8, 3), np.uint8) + 20
    light = np.zeros((8, 8, 3), np.uint8) + 200
    purple = np.zeros((8, 8, 3), np.uint8)
    purple[...] = (150, 60, 170)
    assert classify_modality(dark) == FLUORESCENCE
    assert classify_modality(light) == BRIGHTFIELD
    assert classify_modality(purple) == STAINED
    assert classify_modality(light[:, :, 0]) == BRIGHTFIELD


def test_invert_only_bright_backgrounds():
    bright = np.full((4, 4), 200, np.uint8)
    dark = np.full((4, 4), 20, np.uint8)
    np.testing.assert_array_equal(invert_bright_background(bright), np.full((4, 4), 55))
    np.testing.assert_array_equal(invert_bright_background(dark), dark)


def test_equalize_global_spreads_to_full_range_and_clahe_differs():
    gray = np.tile(np.arange(100, 140, dtype=np.uint8), (40, 1))
    out = equalize_histogram(gray, "global")
    assert out.min() < 10 and out.max() == 255
    assert not np.array_equal(equalize_histogram(gray, "clahe", 2.0, 4), out)
    with pytest.raises(ValueError, match="unknown histogram equalization method 'x'"):
        equalize_histogram(gray, "x")


def test_gaussian_preserves_constant_and_validates_kernel():
    flat = np.full((9, 9), 77, np.uint8)
    np.testing.assert_array_equal(gaussian_smooth(flat, 5, 1.0), flat)
    impulse = np.zeros((9, 9), np.uint8)
    impulse[4, 4] = 255
    smoothed = gaussian_smooth(impulse, 3, 1.0)
    assert smoothed[4, 4] < 255 and smoothed[4, 5] > 0 and smoothed[0, 0] == 0
    with pytest.raises(ValueError, match="odd"):
        gaussian_smooth(flat, 4, 1.0)


def test_resize_labels_never_invents_ids_and_image_uses_area_when_shrinking():
    labels = np.zeros((10, 10), np.uint16)
    labels[:5, :5], labels[5:, 5:] = 3, 9
    assert set(np.unique(resize_labels(labels, (7, 13)))) == {0, 3, 9}
    image = np.zeros((4, 4), np.uint8)
    image[:2, :2] = 200
    np.testing.assert_array_equal(resize_image(image, (2, 2)), [[200, 0], [0, 0]])


def test_preprocess_chain_shape_and_inversion():
    image = np.full((50, 60, 4), 220, np.uint8)
    image[10:20, 10:20, :3] = 30  # dark nucleus on a light background
    assert preprocess_image(image, PARAMS).shape == (50, 60)  # no size: the own grid
    out = preprocess_image(image, PARAMS, (32, 32))
    assert out.shape == (32, 32) and out.dtype == np.uint8
    assert out[8, 7] > out[28, 28]  # after inversion the nucleus is the bright part


def test_preprocess_steps_can_be_switched_off():
    image = np.random.default_rng(3).integers(0, 100, (20, 30), dtype=np.uint8)
    off = {name: {**step, "enabled": False} for name, step in PARAMS.items()}
    np.testing.assert_array_equal(preprocess_image(image, off), image)
