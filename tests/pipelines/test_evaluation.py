"""Evaluation nodes on exact cases, and the whole pipeline through SequentialRunner."""

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from nucleus_segmentation import bundle
from nucleus_segmentation.pipelines.evaluation.nodes import (
    compare_methods,
    evaluate_test_predictions,
    plot_comparison_panels,
    predict_test_images,
    segment_test_with_baselines,
    separate_test_instances,
    tune_instance_separation,
)
from nucleus_segmentation.pipelines.evaluation.pipeline import create_pipeline
from tests.conftest import disk
from tests.pipelines.test_data_processing import KeptDataset
from tests.pipelines.test_training import RAW, _data

PARAMS = {
    "compare_with_baseline": True,
    "tta_compare": {"flips": {"scales": [1.0], "flips": ["none", "horizontal"]}},
    "instances": {
        "n_workers": 1,
        "search": {
            "threshold": [0.5],
            "method": ["distance"],
            "seed_depth": [1.0, 20.0],
            "smoothing": [0.0],
            "min_size": [1],
        },
    },
    "baselines": {"seed": 0, "multilevel": {"levels": 2, "nucleus_classes": 1}},
    "figures": {"per_modality": 1, "seed": 0, "panel_inches": 1.0, "dpi": 40},
}
SEGMENTATION = {"tta": {"scales": [1.0], "flips": ["none"]}}
SEPARATION = {"threshold": 0.5, "method": "distance", "seed_depth": 1.0, "smoothing": 0.0}
SEPARATION["min_size"] = 1
RULE = {"spread_threshold": 15.0, "brightness_threshold": 127.0}  # ingestion.modality


class Echo:
    """A "model" whose nucleus probability is its input image (0..1)."""

    def predict_on_batch(self, batch):
        return np.concatenate([1 - batch, batch], axis=-1)


def _test_data():
    """Raw images (bright disks on dark, the labels' own grid) and a split with two modalities."""
    images, _, split = _data()
    split = split.assign(
        split=["validation", "validation", "test", "test"],
        modality=["fluorescence", "fluorescence", "fluorescence", "stained"],
        group=["fluorescence-a", "fluorescence-a", "fluorescence-b", "stained-c"],
    )
    return images, split


def _labels(images, ids=("img2", "img3")):
    return {k: images[f"{k}/labels"] for k in ids}


def test_evaluation_scores_a_perfect_and_an_empty_prediction():
    images, split = _test_data()
    perfect = _labels(images)
    plain = {"img2": perfect["img2"], "img3": np.zeros_like(perfect["img3"])}
    instances = {"attention_unet": plain, "tta:flips": perfect}
    per_image, per_modality, per_acquisition, metrics, tta = evaluate_test_predictions(
        instances, images, split, PARAMS, SEGMENTATION
    )
    by_id = per_image.set_index("image_id")
    assert by_id.loc["img2", "dsb_score"] == 1.0 and by_id.loc["img2", "miou"] == 1.0
    assert by_id.loc["img2", "dice"] == 1.0 and by_id.loc["img2", "area_error"] == 0.0
    assert by_id.loc["img3", "dsb_score"] == 0.0 and by_id.loc["img3", "recall"] == 0.0
    assert by_id.loc["img2", "true_nuclei"] == by_id.loc["img2", "predicted_nuclei"] == 2
    assert per_modality["modality"].tolist() == ["fluorescence", "stained", "all"]
    assert by_id.loc["img3", "acquisition"] == "stained-c"
    # One row per test acquisition and "all": the spread from one acquisition to the next.
    rows = per_acquisition.set_index("acquisition")
    assert rows.index.tolist() == ["fluorescence-b", "stained-c", "all"]
    assert rows.loc["fluorescence-b", "dsb_score"] == 1.0
    assert rows.loc["stained-c", "dsb_score"] == 0.0
    assert rows.loc["all", "images"] == 2
    assert metrics["dsb_score"]["value"] == 0.5
    # Pooled over both images, half the nucleus pixels are found: IoU 1/2, Dice 2/3.
    assert metrics["nucleus_iou_pooled"]["value"] == pytest.approx(0.5)
    assert metrics["dice_pooled"]["value"] == pytest.approx(2 / 3)
    rows = tta.set_index("variant")
    assert rows.loc["in_use", "in_use"] and not rows.loc["flips", "in_use"]
    assert rows.loc["flips", "flips"] == "none horizontal"
    assert rows.loc["flips", "dsb_score"] == 1.0 and rows.loc["in_use", "dsb_score"] == 0.5


def test_outlines_one_pixel_too_tight_show_as_a_negative_area_error():
    images, split = _test_data()
    truth = _labels(images)
    from scipy import ndimage

    tight = {
        k: np.where(ndimage.binary_erosion(t > 0), t, 0).astype(np.uint16) for k, t in truth.items()
    }
    per_image, per_modality, _, _, _ = evaluate_test_predictions(
        {"attention_unet": tight}, images, split, PARAMS, SEGMENTATION
    )
    expected = [
        ((tight[k] == n).sum() - (truth[k] == n).sum()) / (truth[k] == n).sum()
        for k in truth
        for n in (1, 2)
    ]
    overall = per_modality.set_index("modality").loc["all"]
    assert overall["area_error"] == pytest.approx(np.mean(expected))
    assert overall["area_error"] < -0.2


def test_separation_is_tuned_on_validation_by_the_instance_score():
    shape = (40, 60)
    left, right = disk(shape, (20, 20), 10), disk(shape, (20, 37), 10)
    truth = (left + 2 * (right & ~left)).astype(np.uint16)
    preprocessed = bundle.pack([("v0", {"labels": truth})])
    probability = {"v0": (truth > 0).astype(np.float32)}
    best, table = tune_instance_separation(probability, preprocessed, PARAMS, RULE)
    # Seeds must rise 20 px above the neck: no maximum does, so the two nuclei stay one object
    # whose IoU with the larger nucleus is just above 0.5: 1 TP, 1 FN at t = 0.50 only -> 0.05.
    assert best["seed_depth"] == 1.0 and isinstance(best["seed_depth"], float)
    assert table["seed_depth"].tolist() == [1.0, 20.0]
    assert table["validation_dsb_score"].iloc[0] > 0.8
    assert table["validation_dsb_score"].iloc[1] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="the validation split: no labelled image"):
        tune_instance_separation({}, preprocessed, PARAMS, RULE)
    # With the segmentation settings the maps came from: recorded beside the separation.
    from nucleus_segmentation.segment import SegmentationSettings, check_separation_plan

    settings = {"scale": {"mode": "native", "factor": 1.5}, "tta": SEGMENTATION["tta"]}
    recorded, _ = tune_instance_separation(probability, preprocessed, PARAMS, RULE, settings)
    assert recorded["tuned_on"]["scale"]["factor"] == 1.5
    assert recorded["tuned_on"]["tta"] == {"scales": [1.0], "flips": ["none"]}
    assert (
        recorded["tuned_on"]["scale"]
        == (SegmentationSettings.from_params(settings).to_params()["scale"])
    )
    assert check_separation_plan(recorded) == check_separation_plan(best)


def test_every_method_is_separated_once_on_the_own_grid_and_compared():
    images, split = _test_data()
    without = segment_test_with_baselines(images, split, None, RAW, SEGMENTATION, PARAMS)
    assert sorted(without) == ["multilevel", "otsu"]
    with_model = segment_test_with_baselines(images, split, Echo(), RAW, SEGMENTATION, PARAMS)
    assert sorted(with_model["unet_baseline"]) == ["img2", "img3"]
    variants = predict_test_images(Echo(), images, split, RAW, SEGMENTATION, PARAMS)
    assert sorted(variants) == ["flips", "in_use"]
    instances = separate_test_instances(variants, with_model, SEPARATION, images, PARAMS)
    assert sorted(instances) == [
        "attention_unet",
        "multilevel",
        "otsu",
        "tta:flips",
        "unet_baseline",
    ]
    for labels in instances.values():
        assert labels["img2"].shape == images["img2/labels"].shape
    table, markdown, metrics = compare_methods(instances, images, split, PARAMS)
    assert table["method"].tolist() == ["otsu", "multilevel", "unet_baseline", "attention_unet"]
    # Bright disks on a dark ground: every method finds them exactly.
    np.testing.assert_allclose(table["miou_pooled"], 1.0)
    np.testing.assert_allclose(table["dsb_score"], 1.0)
    assert metrics["otsu.miou_pooled"]["value"] == 1.0
    assert "| Otsu threshold | 100.00 |" in markdown
    assert markdown.count("\n| ") == 5  # header + four methods


class GrayEcho(Echo):
    """A one-channel "model" (the plain U-Net of --env baseline is gray)."""

    input_shape = (None, None, None, 1)

    def predict_on_batch(self, batch):
        assert batch.shape[-1] == 1, batch.shape
        return super().predict_on_batch(batch)


def test_the_baselines_get_the_gray_image_when_the_network_takes_colour():
    images, split = _test_data()
    stained = images["img3/image"]
    images = {**images, "img3/image": np.dstack([stained, stained // 4, stained])}
    colour = {**RAW, "stain": {"representation": "rgb", "spread_threshold": 15.0}}
    gray = segment_test_with_baselines(images, split, GrayEcho(), RAW, SEGMENTATION, PARAMS)
    rgb = segment_test_with_baselines(images, split, GrayEcho(), colour, SEGMENTATION, PARAMS)
    assert sorted(rgb) == ["multilevel", "otsu", "unet_baseline"]
    for method, probabilities in gray.items():
        for image_id, probability in probabilities.items():
            np.testing.assert_array_equal(rgb[method][image_id], probability)


class BoundaryEcho:
    """A three-class "model": nucleus = its input, interior = input ** 2."""

    def predict_on_batch(self, batch):
        return np.concatenate([1 - batch, batch**2, batch - batch**2], axis=-1)


def test_a_boundary_model_tuned_to_interior_seeds_is_compared_with_a_two_class_baseline():
    images, split = _test_data()
    params = {
        **PARAMS,
        "instances": {**PARAMS["instances"], "search": {**PARAMS["instances"]["search"]}},
    }
    params["instances"]["search"]["method"] = ["interior"]
    validation = predict_test_images(BoundaryEcho(), images, split, RAW, SEGMENTATION, params)
    best, table = tune_instance_separation(validation["in_use"], images, params, RULE)
    assert best["method"] == "interior" and set(table["method"]) == {"interior"}
    baselines = segment_test_with_baselines(images, split, Echo(), RAW, SEGMENTATION, params)
    instances = separate_test_instances(validation, baselines, best, images, params)
    # The baseline has no interior map: it is split on the distance relief, not refused.
    table, _, _ = compare_methods(instances, images, split, params)
    np.testing.assert_allclose(table["dsb_score"], 1.0)
    # A two-class model has no interior settings to try: the search says so.
    with pytest.raises(ValueError, match="only method 'interior'"):
        tune_instance_separation(
            predict_test_images(Echo(), images, split, RAW, SEGMENTATION, params)["in_use"],
            images,
            params,
            RULE,
        )


def test_the_baseline_env_does_not_compare_the_model_with_itself():
    images, split = _test_data()
    params = {**PARAMS, "compare_with_baseline": False, "model_label": "U-Net (plain)"}
    baselines = segment_test_with_baselines(images, split, Echo(), RAW, SEGMENTATION, params)
    assert "unet_baseline" not in baselines
    table, _, _ = compare_methods({"attention_unet": _labels(images)}, images, split, params)
    assert table["description"].tolist() == ["U-Net (plain)"]


def test_comparison_panels_show_every_method_and_the_truth():
    images, split = _test_data()
    baselines = segment_test_with_baselines(images, split, None, RAW, SEGMENTATION, PARAMS)
    instances = separate_test_instances(
        {"in_use": baselines["otsu"]}, baselines, SEPARATION, images, PARAMS
    )
    figure = plot_comparison_panels(instances, images, split, PARAMS)
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    assert titles == ["original", "Otsu threshold", "Multi-level threshold", "Attention U-Net"] + [
        "ground truth"
    ]
    assert len(figure.axes) == 2 * 5  # one test image per modality, five columns


def test_evaluation_pipeline_runs_end_to_end():
    images, split = _test_data()
    # Both validation images are fluorescence: that modality gets settings of its own.
    instances = {**PARAMS["instances"], "per_modality": {"min_images": 2}}
    per_modality = {**PARAMS, "instances": instances}
    catalog = DataCatalog(
        {
            "trained_model": MemoryDataset(Echo(), copy_mode="assign"),
            "baseline_model": MemoryDataset(None),
            "ingested_images": MemoryDataset(images, copy_mode="assign"),
            "data_split": MemoryDataset(split),
            "params:evaluation": MemoryDataset(per_modality),
            "params:ingestion.modality": MemoryDataset(RULE),
            "params:preprocessing": MemoryDataset(RAW),
            "params:segmentation": MemoryDataset(SEGMENTATION),
        }
        | {
            name: KeptDataset()
            for name in (
                "instance_postprocessing",
                "method_comparison_table",
                "evaluation_per_image_table",
                "evaluation_per_acquisition_table",
                "test_metrics",
                "tta_comparison_table",
            )
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    separation = catalog.load("instance_postprocessing")
    assert separation["seed_depth"] == 1.0
    assert list(separation["by_modality"]) == ["fluorescence"]
    assert separation["modality_rule"] == RULE
    comparison = catalog.load("method_comparison_table")
    assert comparison["method"].tolist() == ["otsu", "multilevel", "attention_unet"]
    per_image = catalog.load("evaluation_per_image_table")
    assert sorted(per_image["image_id"]) == ["img2", "img3"]
    per_acquisition = catalog.load("evaluation_per_acquisition_table")
    assert per_acquisition["acquisition"].tolist() == ["fluorescence-b", "stained-c", "all"]
    assert catalog.load("test_metrics")["miou_pooled"]["value"] == pytest.approx(1.0)
    assert isinstance(catalog.load("tta_comparison_table"), pd.DataFrame)


def _ramp_nuclei(radius):
    """Two nuclei whose probability falls off linearly from their centres (the 0.5 contour
    at 10 px), labelled out to ``radius`` px."""
    shape = (40, 70)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    probability, truth = np.zeros(shape, np.float32), np.zeros(shape, np.uint16)
    for index, center in enumerate(((20, 18), (20, 50)), start=1):
        distance = np.hypot(yy - center[0], xx - center[1])
        probability = np.maximum(probability, np.clip(1 - distance / 20, 0, 1))
        truth[distance < radius] = index
    return probability, truth


def test_the_outline_level_is_tuned_after_the_separation_to_the_labels_extent():
    """Labels drawn 3 px inside the nuclei the network sees (a lab whose outlines are
    tighter): the probability falls off linearly, so only a higher outline level matches."""
    probability, truth = _ramp_nuclei(7)  # the 0.5 contour is at 10 px, the 0.65 one at 7
    preprocessed = bundle.pack([("v0", {"labels": truth})])
    params = {**PARAMS, "instances": {**PARAMS["instances"], "outline": [None, 0.4, 0.65]}}
    best, table = tune_instance_separation({"v0": probability}, preprocessed, params, RULE)
    assert best["outline"] == 0.65 and best["seed_depth"] == 1.0
    assert table["validation_dsb_score"].iloc[0] > 0.9
    untuned = table[table["outline"].isna()]["validation_dsb_score"].max()
    assert untuned < table["validation_dsb_score"].iloc[0]
    # Without outline levels the node tunes the separation alone, as before.
    best, _ = tune_instance_separation({"v0": probability}, preprocessed, PARAMS, RULE)
    assert best["outline"] is None


def test_each_modality_with_enough_validation_images_gets_its_own_separation():
    """Fluorescence labels drawn at the network's 0.5 contour, stained ones 3 px tighter
    (at the 0.65 contour): tuned per modality, each gets its own outline level."""
    pairs = {"f0": _ramp_nuclei(10), "f1": _ramp_nuclei(10), "s0": _ramp_nuclei(7)}
    probability = {k: p for k, (p, _) in pairs.items()}
    # The colour test tells the modality from the raw images: dark gray, and purple on pink.
    gray = np.full(pairs["f0"][1].shape, 20, np.uint8)
    raw = {"f0": gray, "f1": gray, "s0": np.dstack([gray * 9, gray * 6, gray * 9])}
    preprocessed = bundle.pack([(k, {"image": raw[k], "labels": t}) for k, (_, t) in pairs.items()])
    instances = {**PARAMS["instances"], "outline": [None, 0.4, 0.65]}
    params = {**PARAMS, "instances": {**instances, "per_modality": {"min_images": 1}}}
    plan, table = tune_instance_separation(probability, preprocessed, params, RULE)
    assert plan["by_modality"]["fluorescence"]["outline"] is None
    assert plan["by_modality"]["stained"]["outline"] == 0.65
    assert plan["outline"] is None  # two of the three images are fluorescence
    assert plan["modality_rule"] == RULE
    assert set(table["modality"]) == {"all", "fluorescence", "stained"}
    assert table.loc[table["modality"] == "stained", "images"].unique().tolist() == [1]
    # A modality with fewer images keeps the pooled setting; none left: one setting.
    params["instances"]["per_modality"] = {"min_images": 2}
    plan, table = tune_instance_separation(probability, preprocessed, params, RULE)
    assert sorted(plan["by_modality"]) == ["fluorescence"] and "stained" not in plan["by_modality"]
    params["instances"]["per_modality"] = {"min_images": 3}
    plan, table = tune_instance_separation(probability, preprocessed, params, RULE)
    assert "by_modality" not in plan and set(table["modality"]) == {"all"}
    params["instances"]["per_modality"] = {"min_images": 0}
    with pytest.raises(ValueError, match="min_images must be >= 1"):
        tune_instance_separation(probability, preprocessed, params, RULE)


def test_test_images_are_separated_with_the_settings_of_their_modality():
    images, split = _test_data()
    stained = images["img3/image"]  # coloured, so the colour test calls it stained
    images = {**images, "img3/image": np.dstack([stained, stained // 2, stained])}
    variants = predict_test_images(Echo(), images, split, RAW, SEGMENTATION, PARAMS)
    # The stained settings drop every object below 10,000 px: no nuclei on img3 (stained).
    plan = {
        **SEPARATION,
        "by_modality": {"stained": {**SEPARATION, "min_size": 10_000}},
        "modality_rule": RULE,
    }
    instances = separate_test_instances(variants, {}, plan, images, PARAMS)
    assert instances["attention_unet"]["img2"].max() > 0
    assert instances["attention_unet"]["img3"].max() == 0
    # The same plan without the stained entry: both images keep their nuclei.
    flat = separate_test_instances(variants, {}, SEPARATION, images, PARAMS)
    assert flat["attention_unet"]["img3"].max() > 0
