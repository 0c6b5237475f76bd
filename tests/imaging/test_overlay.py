"""Overlays for people: any image shown as 8-bit RGB with the nucleus contours drawn."""

import numpy as np
import pytest
from skimage.segmentation import find_boundaries

from nucleus_segmentation.imaging.overlay import display_rgb, draw_contours, mask_image
from tests.conftest import disk


def _labels(shape=(40, 60)):
    labels = disk(shape, (20, 15), 8).astype(np.uint16)
    labels[disk(shape, (20, 40), 8) > 0] = 2
    return labels


def test_display_keeps_8_bit_repeats_gray_and_drops_alpha():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    shown = display_rgb(gray)
    assert shown.shape == (3, 4, 3) and shown.dtype == np.uint8
    assert (shown == gray[..., None]).all()
    rgba = np.dstack([gray, gray + 1, gray + 2, np.zeros_like(gray)])
    np.testing.assert_array_equal(display_rgb(rgba), rgba[..., :3])


def test_16_bit_is_stretched_over_its_own_range():
    image = np.full((20, 50), 1000, np.uint16)
    image[5:15, 10:30] = 3000  # 20 % of the pixels
    shown = display_rgb(image)
    assert shown.dtype == np.uint8
    assert set(np.unique(shown)) == {0, 255}
    assert (shown[5:15, 10:30] == 255).all() and shown[0, 0, 0] == 0


def test_contours_are_drawn_in_the_colour_on_a_copy():
    labels = _labels()
    image = np.full((40, 60, 4), 30, np.uint8)
    overlay = draw_contours(image, labels, colour=(255, 0, 255))
    edges = find_boundaries(labels, mode="inner")
    assert overlay.shape == (40, 60, 3)
    assert (overlay[edges] == (255, 0, 255)).all()
    assert (overlay[~edges] == 30).all()
    assert edges[20, 7] and not edges[20, 15]  # a disk's rim, not its middle
    assert (image == 30).all()  # the input is left alone
    outer = draw_contours(image[..., 0], labels, (0, 255, 0), mode="outer")
    assert (outer[find_boundaries(labels, mode="outer")] == (0, 255, 0)).all()


@pytest.mark.parametrize(
    ("colour", "mode", "message"),
    [
        ((255, 0), "inner", "three values"),
        ((0, 0, 300), "inner", "three values"),
        ((0, 255, 0), "around", "contour mode"),
    ],
)
def test_bad_contour_styles_are_refused(colour, mode, message):
    with pytest.raises(ValueError, match=message):
        draw_contours(np.zeros((40, 60), np.uint8), _labels(), colour, mode)


def test_other_sizes_are_refused_and_the_mask_is_0_255():
    with pytest.raises(ValueError, match="labels are"):
        draw_contours(np.zeros((40, 61), np.uint8), _labels())
    mask = mask_image(_labels())
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    np.testing.assert_array_equal(mask > 0, _labels() > 0)
