"""The one segmentation path: scale policy, tiling, test-time variants, separation."""

import numpy as np
import pytest
from scipy import ndimage

from nucleus_segmentation.errors import DataProblem, ParameterError
from nucleus_segmentation.model.predict import output_stride
from nucleus_segmentation.segment import (
    ScalePolicy,
    SegmentationSettings,
    check_model_separation,
    check_separation,
    check_separation_plan,
    image_separation,
    median_nucleus_area,
    network_probability,
    nucleus_probability,
    prepare_image,
    prepare_labels,
    scaled_probability,
    segment_image,
    segment_image_scaled,
)
from tests.conftest import disk

RAW = {  # every preprocessing step off: the network sees the gray image itself
    "invert": {"enabled": False, "brightness_threshold": 127.0},
    "equalize": {"enabled": False, "method": "global", "clip_limit": 2.0, "tile_grid": 8},
    "smooth": {"enabled": False, "kernel_size": 5, "sigma": 1.0},
}
SEPARATION = {
    "threshold": 0.5,
    "method": "distance",
    "seed_depth": 1.0,
    "smoothing": 1.0,
    "min_size": 8,
}


class Echo:
    """A "model" whose nucleus probability is the input itself (flip- and scale-equivariant);
    it records the input sizes it was called with."""

    def __init__(self):
        self.shapes = []

    def predict_on_batch(self, batch):
        self.shapes.append(batch.shape)
        return np.concatenate([1 - batch, batch], axis=-1)


class LeftHalf:
    """A "model" that calls the left half of every input nucleus: not flip-equivariant."""

    def predict_on_batch(self, batch):
        nucleus = np.zeros_like(batch)
        nucleus[:, :, : batch.shape[2] // 2] = 1.0
        return np.concatenate([1 - nucleus, nucleus], axis=-1)


def test_native_policy_keeps_the_grid_and_fixed_policy_resizes_both_ways():
    image = np.full((40, 24), 100, np.uint8)
    assert prepare_image(image, RAW, ScalePolicy()).shape == (40, 24)
    assert prepare_image(image, RAW, ScalePolicy(factor=2.0)).shape == (80, 48)
    assert prepare_image(image, RAW, ScalePolicy(mode="fixed", size=(32, 32))).shape == (32, 32)
    labels = np.zeros((40, 24), np.uint16)
    labels[10:20, 5:15] = 7
    fixed = prepare_labels(labels, ScalePolicy(mode="fixed", size=(20, 12)))
    assert fixed.shape == (20, 12) and set(np.unique(fixed)) == {0, 7}
    # The probability always comes back on the image's own grid.
    for policy in (ScalePolicy(), ScalePolicy(mode="fixed", size=(32, 32))):
        model = Echo()
        settings = SegmentationSettings(scale=policy)
        probability = nucleus_probability(model, image, RAW, settings)
        assert probability.shape == (40, 24)
        np.testing.assert_allclose(probability, 100 / 255, rtol=1e-5)
        assert model.shapes[0][1:3] == prepare_image(image, RAW, policy).shape


def test_adapted_factor_brings_nuclei_outside_the_band_to_the_target_area():
    shrink = ScalePolicy(nucleus_area=(None, 2500), target_area=400, factor_range=(0.25, 2.0))
    assert shrink.adapts and shrink.adapted_factor(2500) is None  # inside: stays at 1
    assert shrink.adapted_factor(3600) == pytest.approx(1 / 3)  # sqrt(400 / 3600)
    assert shrink.adapted_factor(40_000) == 0.25  # sqrt(0.01) = 0.1, limited to the range
    assert shrink.adapted_factor(10) is None and shrink.adapted_factor(None) is None
    # The band is at the network's scale: at factor 2 an area of 1,000 is seen as 4,000.
    doubled = ScalePolicy(factor=2.0, nucleus_area=(None, 2500), target_area=400)
    assert doubled.adapted_factor(1000) == pytest.approx(np.sqrt(0.4))
    assert doubled.adapted_factor(600) is None  # seen as 2,400
    grow = ScalePolicy(nucleus_area=(150, None), target_area=300)
    assert grow.adapted_factor(75) == 2.0 and grow.adapted_factor(100) == pytest.approx(3**0.5)
    assert grow.adapted_factor(10_000) is None
    # A factor the range pins at the policy's own factor predicts nothing again.
    pinned = ScalePolicy(nucleus_area=(150, None), target_area=300, factor_range=(0.5, 1.0))
    assert pinned.adapted_factor(75) is None
    for off in (ScalePolicy(nucleus_area=(None, None)), ScalePolicy(mode="fixed")):
        assert not off.adapts and off.adapted_factor(40_000) is None


def test_median_nucleus_area_counts_the_pixels_of_each_separated_nucleus():
    shape = (64, 96)
    disks = [disk(shape, (16, 16), 5), disk(shape, (40, 40), 9), disk(shape, (30, 78), 12)]
    areas = sorted(int(d.sum()) for d in disks)
    probability = np.clip(sum(disks), 0, 1).astype(np.float32)
    assert median_nucleus_area(probability) == areas[1]
    boundary = np.stack([probability, probability], axis=-1)  # nucleus, interior
    assert median_nucleus_area(boundary) == areas[1]
    assert median_nucleus_area(np.zeros(shape, np.float32)) is None


def test_an_image_with_nuclei_outside_the_band_is_predicted_again_rescaled():
    shape = (160, 160)
    big = np.zeros(shape, np.uint8)
    big[disk(shape, (80, 80), 40) > 0] = 255  # ~5,000 px: far above 2,500
    small = np.zeros(shape, np.uint8)
    small[disk(shape, (40, 40), 8) > 0] = 255  # ~200 px
    settings = SegmentationSettings(
        scale=ScalePolicy(nucleus_area=(None, 2500), target_area=600, factor_range=(0.25, 2))
    )
    model = Echo()
    probability, factor = scaled_probability(model, big, RAW, settings)
    area = int((disk(shape, (80, 80), 40) > 0).sum())
    assert factor == pytest.approx(np.sqrt(600 / area))  # about 0.35
    side = round(160 * factor)
    assert [s[1:3] for s in model.shapes] == [(160, 160), (side, side)]  # whole, then shrunk
    assert probability.shape == shape  # back on the image's own grid
    labels, again = segment_image_scaled(Echo(), big, RAW, settings, SEPARATION)
    assert again == factor and labels.shape == shape and labels.max() == 1
    model = Echo()
    assert scaled_probability(model, small, RAW, settings)[1] == 1.0
    assert len(model.shapes) == 1  # inside the band: one prediction
    # Two touching nuclei of ~1,500 px: one region above 2,500 px, yet once separated
    # their median is inside the band.
    pair = np.zeros(shape, np.uint8)
    pair[(disk(shape, (80, 57), 22) | disk(shape, (80, 100), 22)) > 0] = 255
    assert int((pair > 0).sum()) > 2500
    assert scaled_probability(Echo(), pair, RAW, settings)[1] == 1.0
    fixed = SegmentationSettings(scale=ScalePolicy(mode="fixed", size=(64, 64)))
    assert scaled_probability(Echo(), big, RAW, fixed)[1] is None
    # At factor 2 the band is met at the network's scale, the new factor on the own grid.
    doubled = SegmentationSettings(scale=ScalePolicy(factor=2.0, nucleus_area=(None, 2500)))
    medium = np.zeros(shape, np.uint8)
    medium[disk(shape, (80, 80), 20) > 0] = 255  # ~1,250 px, seen as ~5,000
    area = int((disk(shape, (80, 80), 20) > 0).sum())
    assert scaled_probability(Echo(), medium, RAW, doubled)[1] == pytest.approx(np.sqrt(300 / area))


def test_an_image_of_small_nuclei_is_predicted_again_enlarged():
    shape = (64, 64)
    image = np.zeros(shape, np.uint8)
    image[(disk(shape, (16, 16), 5) | disk(shape, (44, 40), 5)) > 0] = 255  # ~80 px each
    area = int((disk(shape, (16, 16), 5) > 0).sum())
    model = Echo()
    labels, factor = segment_image_scaled(model, image, RAW, SegmentationSettings(), SEPARATION)
    assert factor == pytest.approx(np.sqrt(300 / area))  # the default band: [150, 2500]
    side = round(64 * factor)
    assert [s[1:3] for s in model.shapes] == [(64, 64), (side, side)]
    assert labels.shape == shape and labels.max() == 2


def test_the_size_watershed_runs_only_where_a_region_could_leave_the_band(monkeypatch):
    import nucleus_segmentation.segment as segment

    measured = []
    monkeypatch.setattr(
        segment,
        "median_nucleus_area",
        lambda p: measured.append(p.shape) or median_nucleus_area(p),
    )
    shape = (96, 96)
    upper = SegmentationSettings(scale=ScalePolicy(nucleus_area=(None, 2500)))
    small = np.zeros(shape, np.uint8)
    small[disk(shape, (30, 30), 8) > 0] = 255
    assert scaled_probability(Echo(), small, RAW, upper)[1] == 1.0 and measured == []
    both = SegmentationSettings()  # a lower bound: always measured
    scaled_probability(Echo(), small, RAW, both)
    assert len(measured) == 1
    # The gate is exact: wherever it skips, the measured median is inside the band.
    rng = np.random.default_rng(3)
    for _ in range(20):
        maps = ndimage.gaussian_filter(rng.random(shape), 4)
        maps = (maps - maps.min()) / np.ptp(maps)
        for probability in (maps, np.dstack([maps, maps**2])):
            if not segment._may_leave_band(upper.scale, probability):
                assert upper.scale.adapted_factor(median_nucleus_area(probability)) is None


def test_identity_tta_is_plain_prediction_and_flips_are_undone_before_averaging():
    image = np.zeros((32, 32), np.uint8)
    plain = SegmentationSettings()
    none = network_probability(LeftHalf(), image, plain)
    assert none[:, :16].min() == 1.0 and none[:, 16:].max() == 0.0
    both = network_probability(LeftHalf(), image, plain.with_tta([1.0], ["none", "horizontal"]))
    np.testing.assert_array_equal(both, np.full((32, 32), 0.5, np.float32))
    vertical = network_probability(LeftHalf(), image, plain.with_tta([1.0], ["vertical"]))
    np.testing.assert_array_equal(vertical, none)  # a vertical flip leaves left-right alone
    ramp = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))
    every = plain.with_tta([0.55, 1.0, 1.55], ["none", "horizontal", "vertical", "both"])
    np.testing.assert_allclose(
        network_probability(Echo(), ramp, every),
        network_probability(Echo(), ramp, plain),
        atol=0.02,
    )


def test_large_images_are_tiled_and_stitched_without_seams():
    image = np.random.default_rng(0).integers(0, 256, (70, 90), dtype=np.uint8)
    model = Echo()
    settings = SegmentationSettings(tile_size=32, tile_overlap=8, batch_size=3)
    probability = network_probability(model, image, settings)
    np.testing.assert_allclose(probability, image / 255, rtol=1e-6)
    assert {shape[1:3] for shape in model.shapes} == {(32, 32)}
    assert max(shape[0] for shape in model.shapes) == 3


def test_segment_image_separates_two_touching_disks_on_the_own_grid():
    shape = (48, 64)
    image = np.zeros(shape, np.uint8)
    image[(disk(shape, (24, 22), 10) | disk(shape, (24, 41), 10)) > 0] = 255
    labels = segment_image(Echo(), image, RAW, SegmentationSettings(), SEPARATION)
    assert labels.shape == shape and labels.dtype == np.uint16 and labels.max() == 2


RULE = {"spread_threshold": 15.0, "brightness_threshold": 127.0}  # ingestion.modality


def test_an_image_gets_the_separation_of_its_modality_by_its_colour_test():
    """Two touching disks, once gray (fluorescence: the pooled settings split them) and
    once coloured (stained: its own settings need seeds 50 px deep, so they stay one)."""
    shape = (48, 64)
    gray = np.zeros(shape, np.uint8)
    gray[(disk(shape, (24, 22), 10) | disk(shape, (24, 41), 10)) > 0] = 255
    stained = np.dstack([gray, gray // 4, gray])
    plan = {
        **SEPARATION,
        "by_modality": {"stained": {**SEPARATION, "seed_depth": 50.0}},
        "modality_rule": RULE,
    }
    assert image_separation(plan, gray) == check_separation(SEPARATION)
    assert image_separation(plan, stained)["seed_depth"] == 50.0
    assert segment_image(Echo(), gray, RAW, SegmentationSettings(), plan).max() == 2
    assert segment_image(Echo(), stained, RAW, SegmentationSettings(), plan).max() == 1
    # Without settings per modality every image gets the one setting.
    assert segment_image(Echo(), stained, RAW, SegmentationSettings(), SEPARATION).max() == 2
    # The colour test's thresholds come from the file: a spread threshold above the
    # image's channel spread makes it fluorescence.
    high = {**plan, "modality_rule": {**RULE, "spread_threshold": 250.0}}
    assert image_separation(high, stained)["seed_depth"] == 1.0


def test_a_separation_plan_is_checked_with_the_problem_named():
    plan = {**SEPARATION, "by_modality": {"stained": SEPARATION}, "modality_rule": RULE}
    assert check_separation_plan(plan)["by_modality"]["stained"]["outline"] is None
    assert check_separation_plan(SEPARATION) == check_separation(SEPARATION)
    with pytest.raises(DataProblem, match="come together"):
        check_separation_plan({**SEPARATION, "by_modality": {"stained": SEPARATION}})
    with pytest.raises(DataProblem, match=r"unknown modalities \['phase'\]"):
        check_separation_plan({**plan, "by_modality": {"phase": SEPARATION}})
    with pytest.raises(DataProblem, match="by_modality.stained: .*threshold"):
        check_separation_plan({**plan, "by_modality": {"stained": {**SEPARATION, "threshold": 2}}})
    with pytest.raises(DataProblem, match="brightness_threshold"):
        check_separation_plan({**plan, "modality_rule": {"spread_threshold": 15.0}})
    # A two-class model cannot seed from the interior, in any modality's settings.
    from types import SimpleNamespace

    interior = {**plan, "by_modality": {"stained": {**SEPARATION, "method": "interior"}}}
    two_class = SimpleNamespace(output_shape=(None, None, None, 2))
    with pytest.raises(DataProblem, match="method 'interior'"):
        check_model_separation(two_class, check_separation_plan(interior))
    check_model_separation(SimpleNamespace(output_shape=(None, None, None, 3)), interior)


def test_a_plan_records_the_settings_it_was_tuned_on_and_differences_are_named(caplog):
    import logging

    from nucleus_segmentation.segment import record_tuning, warn_if_tuned_otherwise

    plan = {**SEPARATION, "by_modality": {"stained": SEPARATION}, "modality_rule": RULE}
    tuned = SegmentationSettings(scale=ScalePolicy(nucleus_area=(None, 2500.0)))
    for separation in (SEPARATION, plan):
        recorded = record_tuning(separation, tuned)
        assert recorded["tuned_on"]["scale"]["nucleus_area"] == [None, 2500.0]
        # Read past by the check: what the watershed gets is unchanged.
        assert check_separation_plan(recorded) == check_separation_plan(separation)
        assert warn_if_tuned_otherwise(recorded, tuned, "x") == []
    recorded = record_tuning(plan, tuned)
    now = SegmentationSettings(tta_flips=("none", "horizontal"))
    with caplog.at_level(logging.WARNING):
        changed = warn_if_tuned_otherwise(recorded, now, "instance_postprocessing")
    assert changed == ["scale.nucleus_area", "tta.flips"]
    assert "scale.nucleus_area: tuned with [None, 2500.0], now [150.0, 2500.0]" in caplog.text
    assert warn_if_tuned_otherwise(plan, now, "x") == []  # tuned before it was recorded
    # The fixed mode's size counts only in that mode.
    small = SegmentationSettings(scale=ScalePolicy(size=(256, 256)))
    assert warn_if_tuned_otherwise(record_tuning(plan, small), SegmentationSettings(), "x") == []
    fixed = SegmentationSettings(scale=ScalePolicy(mode="fixed", size=(256, 256)))
    fixed_now = SegmentationSettings(scale=ScalePolicy(mode="fixed"))
    assert warn_if_tuned_otherwise(record_tuning(plan, fixed), fixed_now, "x") == ["scale.size"]
    # A hand-edited record that is not a mapping per group counts as differing, no crash.
    broken = {**plan, "tuned_on": {"scale": 1.0, "tta": {}}}
    assert "scale.factor" in warn_if_tuned_otherwise(broken, now, "x")
    with pytest.raises(DataProblem, match="'tuned_on' must map"):
        check_separation_plan({**SEPARATION, "tuned_on": [1.0]})


class BoundaryEcho:
    """A three-class "model": background 1 - x, interior x * (1 - edge), boundary x * edge,
    ``edge`` being the ring (of ``edges``, the input's own grid) it was told about."""

    def __init__(self, edges):
        self.edges = edges

    def predict_on_batch(self, batch):
        edge = np.broadcast_to(self.edges[None, ..., None], batch.shape)
        return np.concatenate([1 - batch, batch * (1 - edge), batch * edge], axis=-1)


def test_a_boundary_model_gives_nucleus_and_interior_tiled_flipped_and_separated():
    from nucleus_segmentation.imaging.targets import boundary_targets

    shape = (48, 64)
    left = disk(shape, (24, 22), 10)
    right = disk(shape, (24, 32), 8) & ~left  # overlapping: the union has one maximum
    truth = (left + 2 * right).astype(np.uint16)
    image = np.where(truth > 0, 255, 0).astype(np.uint8)
    edges = (boundary_targets(truth, 2) == 2).astype(np.float32)
    model = BoundaryEcho(edges)
    maps = nucleus_probability(model, image, RAW, SegmentationSettings())
    assert maps.shape == (*shape, 2) and maps.dtype == np.float32
    np.testing.assert_allclose(maps[..., 0], truth > 0)
    np.testing.assert_allclose(maps[..., 1], (truth > 0) & (edges == 0))
    interior = {**SEPARATION, "method": "interior", "min_size": 4}
    labels = segment_image(model, image, RAW, SegmentationSettings(), interior)
    assert labels.max() == 2 and labels[24, 14] != labels[24, 38]
    assert segment_image(model, image, RAW, SegmentationSettings(), SEPARATION).max() == 1


class ThreeClassSquare:
    """A three-class "model" computing every class from its own input pixel x: background
    1 - x, interior x ** 2, boundary x - x ** 2 (so nucleus = x, interior = x ** 2)."""

    def predict_on_batch(self, batch):
        return np.concatenate([1 - batch, batch**2, batch - batch**2], axis=-1)


def test_boundary_maps_are_flipped_back_scaled_and_tiled_channel_by_channel():
    image = np.random.default_rng(1).integers(0, 256, (70, 90), dtype=np.uint8)
    x = image / 255
    plain = SegmentationSettings()
    maps = network_probability(ThreeClassSquare(), image, plain)
    assert maps.shape == (70, 90, 2)
    np.testing.assert_allclose(maps[..., 0], x, rtol=1e-5)  # nucleus, not swapped
    np.testing.assert_allclose(maps[..., 1], x**2, rtol=1e-5, atol=1e-7)  # interior
    flips = plain.with_tta([1.0], ["none", "horizontal", "vertical", "both"])
    np.testing.assert_allclose(network_probability(ThreeClassSquare(), image, flips), maps, 1e-5)
    tiled = SegmentationSettings(tile_size=32, tile_overlap=8, batch_size=3)
    np.testing.assert_allclose(network_probability(ThreeClassSquare(), image, tiled), maps, 1e-5)
    # On the own grid after a scale policy, both channels come back resized alike.
    ramp = np.tile(np.linspace(0, 255, 90).astype(np.uint8), (70, 1))  # smooth: resizes back
    scaled = SegmentationSettings(scale=ScalePolicy(factor=2.0, nucleus_area=(None, None)))
    back = nucleus_probability(ThreeClassSquare(), ramp, RAW, scaled)
    assert back.shape == (70, 90, 2)
    np.testing.assert_allclose(back[..., 0], ramp / 255, atol=0.02)
    np.testing.assert_allclose(back[..., 1], (ramp / 255) ** 2, atol=0.02)


def test_output_stride_is_read_off_the_model():
    from nucleus_segmentation.model.unet import UNetConfig, build_attention_unet

    model = build_attention_unet(UNetConfig(base_filters=4, depth=3, aspp=False))
    assert output_stride(model) == 8
    assert output_stride(Echo()) == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tta": {"scales": [1.0], "flips": ["sideways"]}}, "flips must be"),
        ({"tta": {"scales": [0.0], "flips": ["none"]}}, "scales must be positive"),
        ({"scale": {"mode": "stretch"}}, "mode must be one of"),
        ({"scale": {"factor": -1}}, "factor must be positive"),
        ({"scale": {"nucleus_area": [0, 2500]}}, "nucleus_area must be"),
        ({"scale": {"nucleus_area": [400, 2500]}}, r"target_area \(300.0\) must be a number"),
        ({"scale": {"nucleus_area": [2500, 150]}}, "with low < high"),
        ({"scale": {"nucleus_area": 2500}}, "nucleus_area must be"),
        ({"scale": {"nucleus_area": ["abc", 2500]}}, "nucleus_area must be"),
        ({"scale": {"target_area": 0}}, "target_area must be a positive"),
        ({"scale": {"factor_range": [2.0, 0.5]}}, "lowest <= highest"),
        ({"scale": {"factor_range": None}}, "factor_range must be"),
        ({"scale": {"factor": 3.0}}, r"factor \(3\) must lie in factor_range"),
        ({"tile_size": 64, "tile_overlap": 64}, "tile_overlap"),
        ({"tiles": 3}, "unknown keys"),
    ],
)
def test_bad_settings_are_refused_with_the_parameter_named(params, message):
    with pytest.raises(ParameterError, match=message):
        SegmentationSettings.from_params(params)


def test_separation_settings_are_checked():
    assert check_separation(SEPARATION)["min_size"] == 8
    with pytest.raises(DataProblem, match="expected the keys"):
        check_separation({**SEPARATION, "extra": 1})
    with pytest.raises(DataProblem, match="threshold"):
        check_separation({**SEPARATION, "threshold": 1.5})
    # The outline level is optional (files tuned before it existed lack it); NaN from a
    # search table and null both mean "the threshold's contour".
    assert check_separation(SEPARATION)["outline"] is None
    assert check_separation({**SEPARATION, "outline": float("nan")})["outline"] is None
    assert check_separation({**SEPARATION, "outline": 0.7})["outline"] == 0.7
    with pytest.raises(DataProblem, match="outline"):
        check_separation({**SEPARATION, "outline": 1.0})


def test_a_model_runs_only_on_input_prepared_like_its_training_data(caplog):
    import logging
    from types import SimpleNamespace

    from nucleus_segmentation.imaging.preprocess import effective_preprocessing
    from nucleus_segmentation.segment import check_model_preprocessing

    percentile = {
        "invert": {"enabled": True, "brightness_threshold": 127.0},
        "equalize": {"enabled": True, "method": "percentile", "clip_limit": 2.0, "tile_grid": 8},
        "smooth": {"enabled": True, "kernel_size": 5, "sigma": 1.0},
    }
    model = SimpleNamespace(trained_preprocessing=effective_preprocessing(percentile))
    # Settings the method does not use (CLAHE's clip limit) do not count.
    check_model_preprocessing(
        model, {**percentile, "equalize": {**percentile["equalize"], "clip_limit": 9.0}}
    )
    clahe = {**percentile, "equalize": {**percentile["equalize"], "method": "clahe"}}
    with pytest.raises(DataProblem) as error:
        check_model_preprocessing(model, clahe)
    message = str(error.value)
    assert "preprocessing.equalize.method='percentile'" in message
    assert "this run has preprocessing.equalize.clip_limit=2.0" in message
    assert "preprocessing.equalize.percentiles=None" in message  # not used by CLAHE
    with caplog.at_level(logging.WARNING):
        check_model_preprocessing(model, {**clahe, "match_model": False})
    assert "preprocessing.equalize.method='percentile'" in caplog.text
    # A model saved before the record existed is not checked.
    check_model_preprocessing(SimpleNamespace(), clahe)


def test_a_model_gets_the_channels_it_takes_whatever_match_model_says():
    from types import SimpleNamespace

    from nucleus_segmentation.segment import check_model_preprocessing

    colour = {**RAW, "stain": {"representation": "rgb", "spread_threshold": 15.0}}
    gray_model = SimpleNamespace(input_shape=(None, None, None, 1))  # no record either
    colour_model = SimpleNamespace(input_shape=(None, None, None, 3))
    check_model_preprocessing(gray_model, RAW)
    check_model_preprocessing(colour_model, colour)
    for model, settings, have in ((gray_model, colour, 1), (colour_model, RAW, 3)):
        with pytest.raises(DataProblem, match=f"takes {have}-channel input"):
            check_model_preprocessing(model, {**settings, "match_model": False})


class ChannelEcho(Echo):
    """A colour "model": nucleus probability = the mean of its input channels."""

    def predict_on_batch(self, batch):
        self.shapes.append(batch.shape)
        mean = batch.mean(axis=-1, keepdims=True)
        return np.concatenate([1 - mean, mean], axis=-1)


def test_colour_input_is_tiled_flipped_and_scaled_with_its_channels():
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    mean = colour.astype(np.float32).mean(axis=2) / 255
    tiled = SegmentationSettings(tile_size=32, tile_overlap=8, batch_size=3)
    model = ChannelEcho()
    np.testing.assert_allclose(network_probability(model, colour, tiled), mean, rtol=1e-5)
    assert {shape[1:] for shape in model.shapes} == {(32, 32, 3)}
    flipped = tiled.with_tta([1.0], ["none", "horizontal", "vertical", "both"])
    np.testing.assert_allclose(network_probability(model, colour, flipped), mean, rtol=1e-5)
    scaled = tiled.with_tta([0.5, 1.0], ["none"])
    assert network_probability(model, colour, scaled).shape == (70, 90)
