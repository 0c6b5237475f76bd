import numpy as np
import pytest

from nucleus_segmentation.imaging.instances import separate_instances
from nucleus_segmentation.imaging.matching import (
    detection_scores,
    dsb_score,
    instance_iou,
    label_ids,
    match_counts,
    matched_area_errors,
)
from tests.conftest import disk


def test_iou_of_two_known_disks():
    shape = (40, 40)
    truth = disk(shape, (20, 15), 6).astype(np.uint16)
    shifted = disk(shape, (20, 17), 6).astype(np.uint16) * 7  # other id, same nucleus moved
    inter = (truth & (shifted > 0)).sum()
    union = truth.sum() + (shifted > 0).sum() - inter
    iou = instance_iou(truth, shifted)
    assert iou.shape == (1, 1)
    assert iou[0, 0] == pytest.approx(inter / union)


@pytest.mark.parametrize(
    "labels",
    [
        np.array([[0, 7, 7], [3, 0, 65535]], np.uint16),  # gaps in the ids, the largest uint16
        np.array([[5, 5], [5, 5]], np.int32),  # no background
        np.zeros((0, 4), np.uint16),  # empty
        np.array([[True, False]]),  # a mask
        np.array([[-2, 0, 4]], np.int32),  # negative: numpy's sort
        np.array([[0, 1 << 30]], np.int64),  # ids beyond counting: numpy's sort
        np.array([[0, 1 << 20]], np.int32),  # two pixels, a sparse large id: numpy's sort
        np.array([[0, 3, 3], [9, 0, 1]], np.uint64),
        np.array([[0, 3, -1]], np.int8),  # negative: numpy's sort
        np.array([[0.0, 2.5, 2.5]]),  # not integers: numpy's sort
    ],
)
def test_label_ids_equal_numpy_unique(labels):
    ids, index = label_ids(labels)
    expected_ids, expected_index = np.unique(labels, return_inverse=True)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(index, expected_index.ravel())
    assert ids.dtype == labels.dtype


def test_label_ids_count_label_maps_without_sorting(monkeypatch):
    """Label maps take the counting path (numpy's sort is the fallback the equality tests
    above cannot tell from it)."""
    from nucleus_segmentation.imaging import matching

    def no_sort(*args, **kwargs):
        raise AssertionError("np.unique called for a label map")

    monkeypatch.setattr(matching.np, "unique", no_sort)
    labels = np.array([[0, 7, 7], [3, 0, 2000]], np.uint16)
    ids, index = label_ids(labels)
    np.testing.assert_array_equal(ids, [0, 3, 7, 2000])
    np.testing.assert_array_equal(index, [0, 2, 2, 1, 0, 3])
    assert label_ids(np.array([[True, False]]))[0].tolist() == [False, True]


def test_label_ids_of_random_label_maps_equal_numpy_unique():
    rng = np.random.default_rng(0)
    for dtype in (np.uint8, np.uint16, np.int32, np.int64):
        labels = rng.choice([0, 1, 4, 9, 120], size=(30, 40)).astype(dtype)
        ids, index = label_ids(labels)
        expected_ids, expected_index = np.unique(labels, return_inverse=True)
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_array_equal(index, expected_index.ravel())
        np.testing.assert_array_equal(ids[index].reshape(labels.shape), labels)


def test_matched_area_errors_of_a_grown_nucleus_with_sparse_ids():
    truth = np.zeros((20, 20), np.uint16)
    truth[2:6, 2:6] = 40  # 16 px
    truth[10:15, 10:15] = 9  # 25 px, not found
    prediction = np.zeros_like(truth)
    prediction[2:6, 2:7] = 300  # 20 px over the 16: IoU 0.8, +25 %
    np.testing.assert_allclose(matched_area_errors(truth, prediction), [0.25])


def test_dsb_score_exact_cases():
    shape = (40, 60)
    a, b = disk(shape, (20, 15), 6), disk(shape, (20, 45), 6)
    truth = (a + 2 * b).astype(np.uint16)
    assert dsb_score(truth, truth) == 1.0
    assert dsb_score(truth, np.zeros_like(truth)) == 0.0  # empty prediction
    assert dsb_score(np.zeros_like(truth), np.zeros_like(truth)) == 1.0
    # One nucleus found exactly, the other missed: TP 1, FN 1 at every threshold -> 1/2.
    assert dsb_score(truth, a.astype(np.uint16)) == 0.5
    # The two nuclei predicted as one object: IoU with each is < 0.5 -> 0 TP, 1 FP, 2 FN.
    merged = ((a + b) > 0).astype(np.uint16)
    assert dsb_score(truth, merged) == 0.0
    assert detection_scores(truth, merged) == {
        "tp": 0,
        "fp": 1,
        "fn": 2,
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
    }


def test_split_nucleus_counts_as_one_match_and_one_false_positive():
    truth = np.zeros((20, 20), np.uint16)
    truth[5:15, 2:18] = 1  # 160 pixels
    prediction = np.zeros_like(truth)
    prediction[5:15, 2:14] = 1  # 120: IoU 0.75 with the truth
    prediction[5:15, 14:18] = 2  # 40: IoU 0.25
    iou = instance_iou(truth, prediction)
    np.testing.assert_allclose(iou, [[0.75, 0.25]])
    assert match_counts(iou, 0.5) == (1, 1, 0)
    # thresholds 0.50..0.70 (5 of 10) match: 1/2 each; 0.75..0.95 do not: 0 -> mean 0.25
    assert dsb_score(truth, prediction) == pytest.approx(0.25)


def test_watershed_separates_two_touching_disks():
    shape = (40, 60)
    touching = np.maximum(disk(shape, (20, 20), 10), disk(shape, (20, 37), 10)).astype(float)
    assert np.unique(touching > 0.5).size == 2  # one connected blob
    labels = separate_instances(touching, threshold=0.5, seed_depth=1.0)
    assert labels.dtype == np.uint16 and labels.max() == 2
    left, right = labels[20, 12], labels[20, 45]
    assert left != right and left > 0 and right > 0
    truth = disk(shape, (20, 20), 10) + 2 * (disk(shape, (20, 37), 10) & ~disk(shape, (20, 20), 10))
    assert dsb_score(truth.astype(np.uint16), labels) > 0.8


def test_watershed_keeps_a_single_disk_whole_and_drops_specks():
    probability = disk((30, 30), (15, 15), 8).astype(float)
    probability[1, 1] = 1.0  # a one-pixel speck
    labels = separate_instances(probability, min_size=4)
    assert labels.max() == 1 and labels[1, 1] == 0
    assert separate_instances(np.zeros((5, 5))).max() == 0


def test_probability_relief_splits_touching_disks_along_the_low_probability_valley():
    shape = (40, 60)
    left, right = disk(shape, (20, 20), 10), disk(shape, (20, 37), 10)
    probability = np.maximum(left, right).astype(float)
    probability[:, 28:30] *= 0.6  # the network is less sure between the two nuclei
    labels = separate_instances(probability, method="probability", smoothing=0)
    assert labels.max() == 2
    assert labels[20, 12] != labels[20, 45]
    # The border follows the valley: every pixel left of it belongs to the left nucleus.
    assert set(np.unique(labels[:, :28][left[:, :28] > 0])) == {labels[20, 12]}
    with pytest.raises(ValueError, match="unknown separation method 'border'"):
        separate_instances(probability, method="border")


@pytest.mark.parametrize("method", ["distance", "probability"])
@pytest.mark.parametrize("smoothing", [0.0, 1.0, 2.0])
def test_elongated_nuclei_stay_whole(method, smoothing):
    rod = np.zeros((40, 100))
    rod[14:26, 10:90] = 1.0  # 12 x 80 px: a flat distance ridge along its middle
    yy, xx = np.mgrid[:40, :100]
    ellipse = (((yy - 20) / 8.0) ** 2 + ((xx - 50) / 40.0) ** 2 <= 1).astype(float)
    for probability in (rod, ellipse):
        labels = separate_instances(probability, method=method, smoothing=smoothing)
        assert labels.max() == 1


def test_seed_depth_must_be_positive():
    with pytest.raises(ValueError, match="seed_depth must be > 0"):
        separate_instances(np.ones((4, 4)), seed_depth=0)


def test_matched_area_errors_are_signed_per_matched_nucleus():
    from nucleus_segmentation.imaging.matching import matched_area_errors

    truth = np.zeros((20, 30), np.uint16)
    truth[2:12, 2:12] = 1  # 100 px
    truth[2:12, 15:25] = 2  # 100 px
    truth[15:18, 2:5] = 3  # 9 px, missed
    prediction = np.zeros_like(truth)
    prediction[2:12, 2:14] = 5  # 120 px over nucleus 1: IoU 100/120 > 0.5, +20 %
    prediction[3:11, 16:24] = 7  # 64 px inside nucleus 2: IoU 0.64, -36 %
    prediction[15:20, 25:30] = 9  # a false nucleus: matches nothing
    errors = matched_area_errors(truth, prediction)
    np.testing.assert_allclose(sorted(errors), [-0.36, 0.2])
    assert matched_area_errors(truth, np.zeros_like(truth)).size == 0


def _cone(shape, center, radius):
    """Probability falling linearly from 1 at ``center`` to 0 at ``radius`` pixels."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    distance = np.hypot(yy - center[0], xx - center[1])
    return np.clip(1 - distance / radius, 0, 1)


def test_outline_level_grows_or_shrinks_nuclei_without_changing_which_are_found():
    shape = (40, 70)
    probability = np.maximum(_cone(shape, (20, 20), 14), _cone(shape, (20, 42), 14))
    probability = np.maximum(probability, 0.35 * _cone(shape, (20, 62), 6))
    base = separate_instances(probability, threshold=0.5, seed_depth=1.0, min_size=1)
    assert base.max() == 2  # the faint blob (peak 0.35) is not a nucleus at 0.5
    areas = {}
    for outline in (0.2, None, 0.7):
        labels = separate_instances(
            probability, threshold=0.5, seed_depth=1.0, min_size=1, outline=outline
        )
        assert labels.max() == 2  # the same two nuclei, never the faint blob
        assert labels[20, 62] == 0
        assert 0 < labels[20, 18] != labels[20, 44] > 0  # still apart
        areas[outline] = np.bincount(labels.ravel())[1:]
        if outline is not None:
            assert set(np.unique(labels[probability <= outline])) == {0}
    assert (areas[0.2] > areas[None]).all() and (areas[None] > areas[0.7]).all()
    with pytest.raises(ValueError, match="outline must be a probability level"):
        separate_instances(probability, outline=1.5)


def test_a_higher_outline_never_loses_a_faint_nucleus():
    shape = (30, 60)
    probability = np.maximum(_cone(shape, (15, 15), 12), 0.6 * _cone(shape, (15, 45), 8))
    found = separate_instances(probability, threshold=0.5, min_size=1)
    assert found.max() == 2  # the faint one peaks at 0.6
    redrawn = separate_instances(probability, threshold=0.5, min_size=1, outline=0.8)
    assert redrawn.max() == 2
    faint = found[15, 45]
    # It never exceeds 0.8, so it keeps its pixels as found; the bright one shrinks.
    assert (redrawn == redrawn[15, 45]).sum() == (found == faint).sum()
    assert (redrawn == redrawn[15, 15]).sum() < (found == found[15, 15]).sum()


def _blob_relief(shape, count, radius, seed, smoothing):
    """A smoothed distance map of ``count`` random disks (some touching, some at the border,
    some too shallow for a seed)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, dtype=bool)
    for _ in range(count):
        center = rng.integers(0, shape, size=2)
        mask |= disk(shape, tuple(center), int(rng.integers(1, radius + 1))) > 0
    return ndimage.gaussian_filter(ndimage.distance_transform_edt(mask), smoothing)


@pytest.mark.parametrize(
    ("shape", "count", "radius"),
    [
        ((200, 300), 3, 12),  # sparse
        ((120, 120), 150, 5),  # dense, many small regions
        ((64, 64), 1, 40),  # one disk over most of the map, touching its borders
        ((1, 50), 4, 3),  # a single row
    ],
)
@pytest.mark.parametrize("smoothing", [0.0, 1.0, 2.0])
def test_seeds_are_skimage_h_maxima_exactly(shape, count, radius, smoothing):
    from skimage.morphology import h_maxima

    import nucleus_segmentation.imaging.instances as instances

    for seed in range(3):
        relief = _blob_relief(shape, count, radius, seed, smoothing)
        for depth in (0.25, 0.5, 1.0, 3.0, 50.0):
            expected = h_maxima(relief, depth).astype(bool)
            np.testing.assert_array_equal(instances._h_maxima(relief, depth), expected)


def test_seeds_of_any_relief_are_skimage_h_maxima():
    """Reliefs outside the fast path's premise (negative values, no zero background, a
    plateau, nothing at all) get skimage's answer too."""
    from scipy import ndimage
    from skimage.morphology import h_maxima

    import nucleus_segmentation.imaging.instances as instances

    rng = np.random.default_rng(7)
    reliefs = [
        ndimage.gaussian_filter(rng.normal(size=(40, 60)), 2.0) * 10,  # negative values too
        ndimage.gaussian_filter(rng.random((50, 50)), 1.5) * 5,  # > 0 everywhere
        np.full((20, 20), 3.0),  # one plateau
        np.zeros((10, 10)),
    ]
    for relief in reliefs:
        for depth in (0.1, 0.5, 2.0):
            expected = h_maxima(relief, depth).astype(bool)
            np.testing.assert_array_equal(instances._h_maxima(relief, depth), expected)


def test_seeds_of_square_regions_see_the_background_around_them():
    """A square region fills its own box: cut out without the zeros around it, its relief
    would span less than the depth and lose the seed h_maxima gives it."""
    from scipy import ndimage
    from skimage.morphology import h_maxima

    import nucleus_segmentation.imaging.instances as instances

    mask = np.zeros((100, 100), dtype=bool)
    mask[10:13, 10:13] = mask[50:55, 60:65] = mask[97:, :3] = True
    relief = ndimage.distance_transform_edt(mask)
    expected = h_maxima(relief, 1.5).astype(bool)
    assert expected[11, 11] and expected[52, 62]
    np.testing.assert_array_equal(instances._h_maxima(relief, 1.5), expected)


def test_scoring_many_settings_at_once_gives_each_its_own_separation():
    """score_separations shares maps between settings and runs them grouped by threshold;
    each score is still that of separate_instances with that setting alone, in the order
    asked, for both kinds of model."""
    from nucleus_segmentation.imaging.instances import score_separations
    from nucleus_segmentation.imaging.matching import dsb_score

    shape = (60, 90)
    rng = np.random.default_rng(3)
    truth = np.zeros(shape, dtype=np.int32)
    for index in range(1, 9):
        truth[disk(shape, tuple(rng.integers(8, (52, 82))), int(rng.integers(4, 9))) > 0] = index
    # Probabilities drawn from the truth: high inside, low at contacts, noisy.
    from scipy import ndimage

    inside = ndimage.distance_transform_edt(truth > 0)
    contact = np.zeros(shape, dtype=bool)
    contact[:-1] |= (truth[:-1] != truth[1:]) & (truth[:-1] > 0) & (truth[1:] > 0)
    contact[:, :-1] |= (truth[:, :-1] != truth[:, 1:]) & (truth[:, :-1] > 0) & (truth[:, 1:] > 0)
    nucleus = np.clip(np.minimum(inside / 3, 1) * ~contact + rng.normal(0, 0.15, shape), 0, 1)
    interior = np.clip((inside > 2.5) * ~contact + rng.normal(0, 0.15, shape), 0, 1)
    settings = [
        {"threshold": t, "method": m, "seed_depth": d, "smoothing": s, "outline": o}
        for t in (0.7, 0.4, 0.55)
        for m in ("interior", "distance", "probability")
        for d in (0.5, 2.0)
        for s in (0.0, 1.5)
        for o in (None, 0.3, 0.6)
    ]
    for probability in (np.dstack([nucleus, interior]), nucleus):
        usable = [s for s in settings if probability.ndim == 3 or s["method"] != "interior"]
        expected = [dsb_score(truth, separate_instances(probability, **s)) for s in usable]
        assert score_separations((probability, truth), usable) == expected
        assert len(set(expected)) > 5  # the settings do separate differently
