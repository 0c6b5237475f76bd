from itertools import combinations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.filters import threshold_otsu

from nucleus_segmentation.imaging.threshold import (
    multilevel_segment,
    multilevel_thresholds,
    otsu_segment,
)


def disk(shape, centre, radius):
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2).astype(np.uint8)


@pytest.fixture
def bright_disk():
    """Background 20, a disk of radius 9 at (30, 25) at 200; returns (image, disk mask)."""
    mask = disk((64, 64), (30, 25), 9)
    return np.where(mask == 1, 200, 20).astype(np.uint8), mask


@pytest.fixture
def haloed_nucleus():
    """Background 10, halo 100 (radius 14), nucleus 220 (radius 7), noise sd 3 (seeded).

    Returns (image, nucleus mask, halo-or-nucleus mask); the noisy ranges stay apart
    (about 0..22, 88..112, 208..232), so any threshold in a gap segments exactly.
    """
    nucleus = disk((64, 64), (32, 30), 7)
    outer = disk((64, 64), (32, 30), 14)
    clean = np.select([nucleus == 1, outer == 1], [220, 100], 10).astype(float)
    noise = np.random.default_rng(7).normal(0, 3, clean.shape)
    return np.clip(np.rint(clean + noise), 0, 255).astype(np.uint8), nucleus, outer


def smooth_noise(seed, shape=(64, 64), low=0, high=255):
    """Smoothed noise stretched to low..high: a continuous histogram with no ties."""
    field = gaussian_filter(np.random.default_rng(seed).normal(size=shape), 3)
    field = (field - field.min()) / (field.max() - field.min())
    return np.rint(low + (high - low) * field).astype(np.uint8)


def between_class_variance(image, thresholds):
    """Reference from pixels, not histograms: class i holds t_(i-1) < value <= t_i."""
    classes = np.searchsorted(np.asarray(thresholds), image, side="left")
    values = image.astype(float)
    return sum(
        (classes == i).mean() * (values[classes == i].mean() - values.mean()) ** 2
        for i in np.unique(classes)
    )


def test_otsu_segment_recovers_bright_disk_exactly(bright_disk):
    image, mask = bright_disk
    original = image.copy()
    out = otsu_segment(image)
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out, mask)
    np.testing.assert_array_equal(image, original)


def test_multilevel_with_one_level_is_otsu_on_the_disk(bright_disk):
    image, mask = bright_disk
    np.testing.assert_array_equal(multilevel_segment(image, levels=1), mask)


def test_two_levels_separate_halo_from_nucleus(haloed_nucleus):
    image, nucleus, outer = haloed_nucleus
    background, core = image[outer == 0], image[nucleus == 1]
    halo = image[(outer == 1) & (nucleus == 0)]
    low, high = multilevel_thresholds(image, levels=2)
    assert 10 < low < 100 and 100 < high < 220
    assert background.max() <= low < halo.min() and halo.max() <= high < core.min()
    np.testing.assert_array_equal(multilevel_segment(image, levels=2), nucleus)
    np.testing.assert_array_equal(multilevel_segment(image, levels=2, nucleus_classes=2), outer)
    # Plain Otsu merges the halo into the nucleus: the error the middle class is there to absorb.
    np.testing.assert_array_equal(otsu_segment(image), outer)


def test_same_seed_gives_same_thresholds():
    image = smooth_noise(3)
    first = multilevel_thresholds(image, levels=3, seed=11)
    np.testing.assert_array_equal(multilevel_thresholds(image, levels=3, seed=11), first)
    assert first.dtype == np.int64 and list(first) == sorted(first)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_level_agrees_with_skimage_otsu(seed):
    image = smooth_noise(seed)
    (threshold,) = multilevel_thresholds(image, levels=1, seed=seed)
    assert abs(threshold - threshold_otsu(image)) <= 1


def test_two_levels_reach_the_exhaustive_optimum():
    # 41 grey levels keep the brute force over all threshold pairs small.
    image = smooth_noise(5, low=100, high=140)
    best = max(between_class_variance(image, pair) for pair in combinations(range(100, 140), 2))
    found = between_class_variance(image, multilevel_thresholds(image, levels=2))
    assert found == pytest.approx(best, rel=1e-12)


def test_constant_image_gives_empty_masks():
    flat = np.full((16, 16), 90, np.uint8)
    np.testing.assert_array_equal(otsu_segment(flat), np.zeros((16, 16), np.uint8))
    np.testing.assert_array_equal(multilevel_segment(flat, levels=2), np.zeros((16, 16)))
    np.testing.assert_array_equal(multilevel_thresholds(flat, levels=3), [90, 90, 90])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda img: otsu_segment(img.astype(float)), "HxW uint8 image"),
        (lambda img: otsu_segment(np.dstack([img] * 3)), "HxW uint8 image"),
        (lambda img: multilevel_thresholds(img.astype(np.uint16)), "HxW uint8 image"),
        (lambda img: multilevel_thresholds(img, levels=0), "levels must be >= 1, got 0"),
        (lambda img: multilevel_thresholds(img, popsize=0), "popsize must be >= 1"),
        (lambda img: multilevel_segment(img, levels=0), "levels must be >= 1, got 0"),
        (lambda img: multilevel_segment(img, nucleus_classes=0), r"in 1\.\.levels \(2\), got 0"),
        (lambda img: multilevel_segment(img, nucleus_classes=3), r"in 1\.\.levels \(2\), got 3"),
    ],
)
def test_bad_arguments_raise_value_error(bright_disk, call, message):
    with pytest.raises(ValueError, match=message):
        call(bright_disk[0])
