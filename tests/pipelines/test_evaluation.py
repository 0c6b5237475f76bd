"""Evaluation nodes on exact cases, and the whole pipeline through SequentialRunner."""

from types import SimpleNamespace

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
    segment_test_with_baselines,
    tune_instance_separation,
)
from nucleus_segmentation.pipelines.evaluation.pipeline import create_pipeline
from tests.conftest import disk
from tests.pipelines.test_data_processing import KeptDataset
from tests.pipelines.test_training import _data

PLAIN = {"scales": [1.0], "flips": ["none"]}
PARAMS = {
    "multiple": 16,
    "batch_size": 2,
    "tta": {
        "use": "plain",
        "compare": ["plain", "flips"],
        "variants": {"plain": PLAIN, "flips": {"scales": [1.0], "flips": ["none", "horizontal"]}},
    },
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
SEPARATION = {"threshold": 0.5, "method": "distance", "seed_depth": 1.0, "smoothing": 0.0}
SEPARATION["min_size"] = 1


class Echo:
    """A "model" whose nucleus probability is its input image (0..1)."""

    def predict_on_batch(self, batch):
        return np.concatenate([1 - batch, batch], axis=-1)


def _test_data():
    preprocessed, _, split = _data()
    split = split.assign(
        split=["validation", "validation", "test", "test"],
        modality=["fluorescence", "fluorescence", "fluorescence", "stained"],
    )
    return preprocessed, split


def test_evaluation_scores_a_perfect_and_an_empty_prediction():
    preprocessed, split = _test_data()
    perfect = preprocessed["img2/mask"].astype(np.float32)
    plain = {"img2": perfect, "img3": np.zeros_like(perfect)}
    flips = {"img2": perfect, "img3": preprocessed["img3/mask"].astype(np.float32)}
    per_image, per_modality, metrics, tta = evaluate_test_predictions(
        {"plain": plain, "flips": flips}, preprocessed, split, SEPARATION, PARAMS
    )
    by_id = per_image.set_index("image_id")
    assert by_id.loc["img2", "dsb_score"] == 1.0 and by_id.loc["img2", "miou"] == 1.0
    assert by_id.loc["img2", "dice"] == 1.0
    assert by_id.loc["img3", "dsb_score"] == 0.0 and by_id.loc["img3", "recall"] == 0.0
    assert by_id.loc["img2", "true_nuclei"] == by_id.loc["img2", "predicted_nuclei"] == 2
    assert per_modality["modality"].tolist() == ["all", "fluorescence", "stained"]
    assert metrics["dsb_score"]["value"] == 0.5
    # Pooled over both images, half the nucleus pixels are found: IoU 1/2, Dice 2/3.
    assert metrics["nucleus_iou_pooled"]["value"] == pytest.approx(0.5)
    assert metrics["dice_pooled"]["value"] == pytest.approx(2 / 3)
    rows = tta.set_index("variant")
    assert rows.loc["plain", "in_use"] and not rows.loc["flips", "in_use"]
    assert rows.loc["flips", "dsb_score"] == 1.0 and rows.loc["plain", "dsb_score"] == 0.5


def test_separation_is_tuned_on_validation_by_the_instance_score():
    shape = (40, 60)
    left, right = disk(shape, (20, 20), 10), disk(shape, (20, 37), 10)
    truth = (left + 2 * (right & ~left)).astype(np.uint16)
    preprocessed = bundle.pack([("v0", {"labels": truth})])
    probability = {"v0": (truth > 0).astype(np.float32)}
    best, table = tune_instance_separation(probability, preprocessed, PARAMS)
    # Seeds must rise 20 px above the neck: no maximum does, so the two nuclei stay one object
    # whose IoU with the larger nucleus is just above 0.5: 1 TP, 1 FN at t = 0.50 only -> 0.05.
    assert best["seed_depth"] == 1.0 and isinstance(best["seed_depth"], float)
    assert table["seed_depth"].tolist() == [1.0, 20.0]
    assert table["validation_dsb_score"].iloc[0] > 0.8
    assert table["validation_dsb_score"].iloc[1] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="validation split is empty"):
        tune_instance_separation({}, preprocessed, PARAMS)


def test_comparison_table_has_a_row_per_method_and_skips_a_missing_baseline():
    preprocessed, split = _test_data()
    ours = {k: preprocessed[f"{k}/mask"].astype(np.float32) for k in ("img2", "img3")}
    without = segment_test_with_baselines(preprocessed, split, Echo(), None, PARAMS)
    assert sorted(without) == ["multilevel", "otsu"]
    with_model = segment_test_with_baselines(preprocessed, split, Echo(), Echo(), PARAMS)
    assert sorted(with_model["unet_baseline"]) == ["img2", "img3"]
    table, markdown, metrics = compare_methods(
        with_model, {"plain": ours}, preprocessed, split, SEPARATION, PARAMS
    )
    assert table["method"].tolist() == ["otsu", "multilevel", "unet_baseline", "attention_unet"]
    # Bright disks on a dark ground: every method finds them exactly.
    np.testing.assert_allclose(table["miou_pooled"], 1.0)
    np.testing.assert_allclose(table["dsb_score"], 1.0)
    assert metrics["otsu.miou_pooled"]["value"] == 1.0
    assert "| Otsu threshold | 100.00 |" in markdown
    assert markdown.count("\n| ") == 5  # header + four methods


def test_the_model_under_evaluation_is_not_compared_with_itself():
    preprocessed, split = _test_data()
    model, same = Echo(), Echo()
    model.loaded_from = same.loaded_from = SimpleNamespace(filepath="m/1/unet_baseline.keras")
    assert "unet_baseline" not in segment_test_with_baselines(
        preprocessed, split, model, same, PARAMS
    )
    params = {**PARAMS, "model_label": "U-Net (plain)"}
    ours = {k: preprocessed[f"{k}/mask"].astype(np.float32) for k in ("img2", "img3")}
    table, _, _ = compare_methods({}, {"plain": ours}, preprocessed, split, SEPARATION, params)
    assert table["description"].tolist() == ["U-Net (plain)"]


def test_comparison_panels_show_every_method_and_the_truth():
    preprocessed, split = _test_data()
    ours = {k: preprocessed[f"{k}/mask"].astype(np.float32) for k in ("img2", "img3")}
    baselines = segment_test_with_baselines(preprocessed, split, Echo(), None, PARAMS)
    figure = plot_comparison_panels(
        baselines, {"plain": ours}, preprocessed, split, SEPARATION, PARAMS
    )
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    assert titles == ["original", "Otsu threshold", "Multi-level threshold", "Attention U-Net"] + [
        "ground truth"
    ]
    assert len(figure.axes) == 2 * 5  # one test image per modality, five columns


def test_evaluation_pipeline_runs_end_to_end():
    preprocessed, split = _test_data()
    catalog = DataCatalog(
        {
            "trained_model": MemoryDataset(Echo(), copy_mode="assign"),
            "baseline_model": MemoryDataset(None),
            "preprocessed_images": MemoryDataset(preprocessed, copy_mode="assign"),
            "data_split": MemoryDataset(split),
            "params:evaluation": MemoryDataset(PARAMS),
        }
        | {
            name: KeptDataset()
            for name in (
                "instance_postprocessing",
                "method_comparison_table",
                "evaluation_per_image_table",
                "test_metrics",
                "tta_comparison_table",
            )
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    assert catalog.load("instance_postprocessing")["seed_depth"] == 1.0
    comparison = catalog.load("method_comparison_table")
    assert comparison["method"].tolist() == ["otsu", "multilevel", "attention_unet"]
    per_image = catalog.load("evaluation_per_image_table")
    assert sorted(per_image["image_id"]) == ["img2", "img3"]
    assert catalog.load("test_metrics")["miou_pooled"]["value"] == pytest.approx(1.0)
    assert isinstance(catalog.load("tta_comparison_table"), pd.DataFrame)
