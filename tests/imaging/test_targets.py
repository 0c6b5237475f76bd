import numpy as np
import pytest

from nucleus_segmentation.errors import ParameterError
from nucleus_segmentation.imaging.instances import separate_instances
from nucleus_segmentation.imaging.matching import dsb_score
from nucleus_segmentation.imaging.targets import (
    boundary_targets,
    class_targets,
    contact_weights,
    nucleus_maps,
    num_classes,
)
from tests.conftest import disk


def two_touching_rectangles() -> np.ndarray:
    labels = np.zeros((10, 14), np.uint16)
    labels[2:8, 2:7] = 1  # rows 2..7, columns 2..6
    labels[2:8, 7:12] = 2  # touches nucleus 1 along columns 6 | 7
    return labels


def test_boundary_targets_of_two_touching_rectangles_are_exact():
    labels = two_touching_rectangles()
    targets = boundary_targets(labels, width=1)
    expected = (labels > 0).astype(np.uint8) * 2  # every nucleus pixel boundary ...
    expected[3:7, 3:6] = 1  # ... but the interiors inside each one-pixel ring
    expected[3:7, 8:11] = 1
    np.testing.assert_array_equal(targets, expected)
    assert targets.dtype == np.uint8


def test_wider_boundary_leaves_a_thinner_interior_and_image_edges_are_not_boundary():
    labels = np.zeros((12, 12), np.uint16)
    labels[:, :] = 1  # one nucleus filling the crop: no edge anywhere
    assert set(np.unique(boundary_targets(labels, 2))) == {1}
    labels = np.zeros((12, 12), np.uint16)
    labels[1:11, 1:11] = 3
    targets = boundary_targets(labels, width=2)
    # Edge pixels at distance 0, their inner neighbours at distance 1 < 2: two rings.
    assert (targets[1:11, 1:11] == 2).sum() == 100 - 36
    np.testing.assert_array_equal(targets[3:9, 3:9], 1)
    assert (targets[labels == 0] == 0).all()


def test_touching_disks_give_two_separate_interiors():
    shape = (40, 60)
    left = disk(shape, (20, 20), 10)
    right = disk(shape, (20, 30), 10) & ~left  # a wide neck: one blob in the union
    labels = (left + 2 * right).astype(np.uint16)
    interior = boundary_targets(labels, 2) == 1
    from scipy import ndimage

    assert ndimage.label(labels > 0)[1] == 1
    assert ndimage.label(interior)[1] == 2


def test_class_targets_kinds_and_errors():
    labels = two_touching_rectangles()
    np.testing.assert_array_equal(class_targets(labels, "binary"), labels > 0)
    assert set(np.unique(class_targets(labels, "boundary", 1))) == {0, 1, 2}
    assert num_classes("binary") == 2 and num_classes("boundary") == 3
    with pytest.raises(ParameterError, match="kind must be one of"):
        class_targets(labels, "contours")
    with pytest.raises(ParameterError, match="boundary_width must be >= 1"):
        boundary_targets(labels, 0)


def test_nucleus_maps_of_two_and_three_classes():
    two = np.array([[[0.8, 0.2], [0.3, 0.7]]], np.float32)
    np.testing.assert_allclose(nucleus_maps(two), [[0.2, 0.7]])
    three = np.array([[[0.5, 0.1, 0.4], [0.1, 0.6, 0.3]]], np.float32)
    maps = nucleus_maps(three)
    assert maps.shape == (1, 2, 2)
    np.testing.assert_allclose(maps[..., 0], [[0.5, 0.9]])  # nucleus: 1 - background
    np.testing.assert_allclose(maps[..., 1], [[0.1, 0.6]])  # interior
    with pytest.raises(ValueError, match="4 output classes"):
        nucleus_maps(np.zeros((2, 2, 4)))


def test_interior_seeds_split_touching_disks_the_distance_map_merges():
    shape = (40, 60)
    left = disk(shape, (20, 20), 10)
    right = disk(shape, (20, 30), 8) & ~left  # overlapping disks: no neck to cut
    truth = (left + 2 * right).astype(np.uint16)
    targets = boundary_targets(truth, 2)
    nucleus = (targets > 0).astype(np.float32)
    maps = np.stack([nucleus, (targets == 1).astype(np.float32)], axis=-1)
    merged = separate_instances(nucleus, method="distance", seed_depth=1.0, smoothing=1.0)
    assert merged.max() == 1  # the union has one distance maximum
    labels = separate_instances(maps, method="interior", seed_depth=1.0, smoothing=1.0)
    assert labels.max() == 2
    assert dsb_score(truth, labels) > dsb_score(truth, merged) + 0.5
    # The outline is the nucleus channel's: the union is covered exactly.
    np.testing.assert_array_equal(labels > 0, truth > 0)
    # Other methods read the nucleus channel of the same maps.
    np.testing.assert_array_equal(separate_instances(maps, method="distance"), merged)


def test_interior_method_needs_a_boundary_model():
    with pytest.raises(ValueError, match="needs a model with a boundary class"):
        separate_instances(np.ones((8, 8)), method="interior")
    with pytest.raises(ValueError, match="HxWx2"):
        separate_instances(np.ones((8, 8, 3)))


def test_contact_weights_follow_the_unet_border_formula_exactly():
    labels = np.array([[1, 1, 0, 2, 2, 0, 0]], np.uint16)
    weights = contact_weights(labels, weight=10.0, sigma=2.0)

    def term(d1, d2):
        return 1 + 10.0 * np.exp(-((d1 + d2) ** 2) / (2 * 2.0**2))

    # nucleus 1 at columns 0-1, nucleus 2 at 3-4: (d1, d2) per column
    expected = [term(0, 3), term(0, 2), term(1, 1), term(0, 2), term(0, 3), term(1, 4), term(2, 5)]
    np.testing.assert_allclose(weights[0], expected, rtol=1e-6)
    assert weights.dtype == np.float32


def test_contact_weights_are_one_without_a_neighbour_within_four_sigma():
    lone = np.zeros((12, 12), np.uint16)
    lone[3:7, 3:7] = 1
    np.testing.assert_array_equal(contact_weights(lone, 10.0, 3.0), np.ones((12, 12)))
    np.testing.assert_array_equal(contact_weights(np.zeros((4, 4), np.uint16), 10.0, 3.0), 1.0)
    far = np.zeros((1, 30), np.uint16)
    far[0, 0], far[0, 29] = 1, 2  # 29 px apart: beyond 4 sigma = 8 of either
    np.testing.assert_array_equal(contact_weights(far, 10.0, 2.0), np.ones((1, 30)))
    near = far.copy()
    near[0, 9] = 3  # 9 px from nucleus 1: the pixels between them have d2 <= 8
    between = 1 + 10.0 * np.exp(-(9**2) / (2 * 2.0**2))  # d1 + d2 = 9 for columns 1-8
    weights = contact_weights(near, 10.0, 2.0)[0]
    np.testing.assert_allclose(weights[1:9], between, rtol=1e-6)
    assert weights[0] == 1.0  # nucleus 1 itself: its next nucleus is 9 px > 4 sigma away
    touching = two_touching_rectangles()
    np.testing.assert_array_equal(contact_weights(touching, 0.0, 3.0), 1.0)  # weight 0: off


def test_contact_weights_peak_where_touching_disks_meet():
    labels = disk((32, 48), (16, 16), 8) + 2 * disk((32, 48), (16, 33), 8)  # touch at x 24 | 25
    weights = contact_weights(labels, 10.0, 3.0)
    rows, cols = np.nonzero(weights == weights.max())  # the contact line, one pixel apart
    assert weights.max() == pytest.approx(1 + 10.0 * np.exp(-1 / 18), rel=1e-6)
    assert set(rows.tolist()) == {16} and set(cols.tolist()) == {24, 25}
    assert weights[16, 8] == 1.0  # the far side: 17 px from the other nucleus > 4 sigma


@pytest.mark.parametrize(
    ("weight", "sigma", "message"),
    [
        (-1.0, 3.0, "contact_weight must be >= 0"),
        (1.0, 0.0, "contact_sigma must be > 0"),
        (1.0, float("inf"), "contact_sigma must be finite"),
        (float("nan"), 3.0, "contact_weight must be finite"),
        ("high", 3.0, "contact_weight must be a number"),
    ],
)
def test_contact_weights_refuse_bad_settings(weight, sigma, message):
    with pytest.raises(ParameterError, match=message):
        contact_weights(np.zeros((2, 2), np.uint16), weight, sigma)


def _brute_force_contact_weights(labels, weight, sigma):
    """One whole-image distance map per nucleus, sorted: the formula without shortcuts."""
    from scipy import ndimage

    ids = [i for i in np.unique(labels) if i]
    distances = np.sort(np.stack([ndimage.distance_transform_edt(labels != i) for i in ids]), 0)
    d1, d2 = distances[0], distances[1]
    term = weight * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    return 1 + np.where(d2 <= 4 * sigma, term, 0.0)


@pytest.mark.parametrize("sigma", [2.0, 2.2, 3.0])
def test_contact_weights_match_a_brute_force_with_three_neighbours_and_diagonals(sigma):
    labels = np.zeros((40, 40), np.uint16)
    labels[10:14, 10:14] = 3  # three nuclei around the pixels near (15, 15) ...
    labels[10:14, 17:20] = 7  # ... ids with gaps
    labels[17:20, 12:16] = 9
    labels[0:3, 37:40] = 4  # in the image corner
    labels[31:34, 31:34] = 5  # diagonal to nucleus 4's box, more than 4 sigma away from all
    weights = contact_weights(labels, 10.0, sigma)
    np.testing.assert_allclose(weights, _brute_force_contact_weights(labels, 10.0, sigma), 1e-5)
    assert weights[15, 15] > 1.5 and weights[32, 32] == 1.0
