"""The calibration pipeline's nodes in memory: the separation in use is read before the new
one is written, scored beside the search, and reported before / after."""

import copy
import logging

import cv2
import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from nucleus_segmentation.errors import DataProblem, ParameterError
from nucleus_segmentation.pipelines.calibration import create_pipeline
from nucleus_segmentation.pipelines.calibration.nodes import (
    calibrate_separation,
    predict_calibration_images,
    report_calibration,
)
from nucleus_segmentation.segment import (
    SEPARATION_KEYS,
    check_model_separation,
    check_separation_plan,
)
from tests.pipelines.test_data_processing import KeptDataset
from tests.pipelines.test_evaluation import (
    PARAMS,
    RULE,
    SEGMENTATION,
    SEPARATION,
    Echo,
    _test_data,
)
from tests.pipelines.test_training import RAW


class TwoClasses:  # a stand-in for a model without a boundary class
    output_shape = (None, None, None, 2)


# Drops every nucleus: the calibrated separation must differ from it and score better.
UNUSABLE = {**SEPARATION, "min_size": 10**6}


def test_calibration_replaces_a_poor_separation_and_reports_both():
    images, split = _test_data()
    metadata = pd.DataFrame({"image_id": split["image_id"]})
    catalog = DataCatalog(
        {
            "trained_model": MemoryDataset(Echo(), copy_mode="assign"),
            "calibration_images": MemoryDataset(images, copy_mode="assign"),
            "calibration_metadata": MemoryDataset(metadata),
            "instance_postprocessing_in_use": MemoryDataset(UNUSABLE),
            "params:evaluation": MemoryDataset(PARAMS),
            "params:calibration": MemoryDataset({"tune": "all"}),
            "params:preprocessing": MemoryDataset(RAW),
            "params:segmentation": MemoryDataset(SEGMENTATION),
        }
        | {
            name: KeptDataset()
            for name in (
                "instance_postprocessing",
                "calibration_search_table",
                "calibration_report_table",
            )
        }
    )
    pipeline = create_pipeline().from_nodes("predict_calibration_images")
    SequentialRunner().run(pipeline, catalog)
    calibrated = catalog.load("instance_postprocessing")
    assert calibrated["min_size"] == 1 and calibrated["outline"] is None
    report = catalog.load("calibration_report_table").set_index("separation")
    assert report.loc["before", "min_size"] == 10**6 and report.loc["before", "dsb_score"] == 0
    assert report.loc["after", "seed_depth"] == calibrated["seed_depth"]
    assert report.loc["after", "dsb_score"] > 0.8
    assert report["images"].tolist() == [4, 4]
    search = catalog.load("calibration_search_table")
    assert "calibration_dsb_score" in search.columns
    assert search["min_size"].max() == 10**6  # the one in use was a candidate
    assert search["calibration_dsb_score"].is_monotonic_decreasing


def test_calibration_keeps_the_separation_in_use_when_nothing_beats_it():
    images, _ = _test_data()
    in_use = {**SEPARATION, "seed_depth": 1.0}
    # A perfect probability of well-apart nuclei: every seed depth scores the same.
    probabilities = {"img0": (images["img0/labels"] > 0).astype("float32")}
    best, table, previous = calibrate_separation(
        probabilities, images, in_use, PARAMS, {"tune": "all"}
    )
    assert previous == {**in_use, "outline": None}
    assert table["calibration_dsb_score"].nunique() == 1  # a tie
    assert best == previous
    with pytest.raises(DataProblem, match="the calibration images: no labelled image"):
        calibrate_separation({}, images, in_use, PARAMS, {"tune": "all"})


def test_outline_calibration_keeps_the_separation_and_fits_only_the_outline():
    images, _ = _test_data()
    # The probability rises over the 3 px inside each nucleus' edge (1/3 on the edge), so
    # the in-use threshold 0.9 draws nuclei 2 px too small and outline 0.3 draws the labels.
    probabilities = {}
    for image_id in ("img0", "img1"):
        inside = (images[f"{image_id}/labels"] > 0).astype("uint8")
        distance = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
        probabilities[image_id] = np.clip(distance / 3.0, 0, 1).astype("float32")
    in_use = {**SEPARATION, "threshold": 0.9}
    params = {**PARAMS, "instances": {**PARAMS["instances"], "outline": [None, 0.3]}}
    best, table, previous = calibrate_separation(
        probabilities, images, in_use, params, {"tune": "outline"}
    )
    assert {k: best[k] for k in SEPARATION_KEYS} == {k: previous[k] for k in SEPARATION_KEYS}
    assert best["outline"] == 0.3 and previous["outline"] is None
    assert set(table["threshold"]) == {0.9}  # no other threshold was tried
    with pytest.raises(ParameterError, match="calibration.tune must be one of"):
        calibrate_separation(probabilities, images, in_use, params, {"tune": "everything"})
    with pytest.raises(ParameterError, match=r"params:calibration: unknown keys \['tunes'\]"):
        calibrate_separation(probabilities, images, in_use, params, {"tunes": "outline"})
    with pytest.raises(ParameterError, match="evaluation.instances.outline, which lists none"):
        calibrate_separation(probabilities, images, in_use, PARAMS, {"tune": "outline"})
    boundary_only = {**in_use, "method": "interior"}  # these maps have no interior class
    with pytest.raises(ParameterError, match="seeds from a boundary class this model lacks"):
        calibrate_separation(probabilities, images, boundary_only, params, {"tune": "outline"})


@pytest.mark.parametrize(
    ("calibration", "message"),
    [
        ({"tune": "everything"}, "calibration.tune must be one of"),
        ({"tune": "outline"}, "evaluation.instances.outline, which lists none"),
    ],
)
def test_a_bad_calibration_setting_stops_before_any_image_is_predicted(calibration, message):
    class Untouchable:  # a model that fails the test if the node reaches prediction
        def __getattr__(self, name):
            raise AssertionError(f"the model was used ({name}) before the settings were checked")

    images, split = _test_data()
    metadata = pd.DataFrame({"image_id": split["image_id"]})
    with pytest.raises(ParameterError, match=message):
        predict_calibration_images(
            Untouchable(), images, metadata, RAW, SEGMENTATION, PARAMS, calibration
        )
    assert predict_calibration_images(  # the same node with good settings predicts
        Echo(), images, metadata, RAW, SEGMENTATION, PARAMS, {"tune": "all"}
    ).keys() == set(split["image_id"])


def test_calibration_fits_each_modality_of_its_images_and_keeps_the_rest_of_the_plan(caplog):
    """A separation tuned per modality: each modality among the calibration images (colour
    test with the plan's rule) is fitted on its own images, starting from the settings it
    had; the settings for all images, the other modalities and the rule stay."""
    images, _ = _test_data()
    stained = {**SEPARATION, "seed_depth": 2.0}
    phase = {**SEPARATION, "min_size": 3}  # a modality with no calibration image
    plan = {
        **SEPARATION,
        "by_modality": {"stained": stained, "brightfield": phase},
        "modality_rule": RULE,
    }
    params = {**PARAMS, "instances": {**PARAMS["instances"], "outline": [None, 0.3]}}
    ids = ("img0", "img1", "img2")
    probabilities = {k: (images[f"{k}/labels"] > 0).astype("float32") for k in ids}
    coloured = dict(images)
    for k in ids[:2]:  # two stained images, one fluorescence (gray)
        gray = images[f"{k}/image"]
        coloured[f"{k}/image"] = np.dstack([gray, gray // 4, gray])
    unchanged = copy.deepcopy(plan)
    calibrated, table, previous = calibrate_separation(
        probabilities, coloured, plan, params, {"tune": "outline"}
    )
    assert plan == unchanged and previous == check_separation_plan(plan)
    fitted = calibrated["by_modality"]
    assert set(fitted) == {"stained", "brightfield", "fluorescence"}
    assert fitted["brightfield"] == {**phase, "outline": None}  # untouched
    assert {k: fitted["stained"][k] for k in SEPARATION_KEYS} == {
        k: stained[k] for k in SEPARATION_KEYS
    }  # fitted from the stained settings, the outline level alone
    assert {k: fitted["fluorescence"][k] for k in SEPARATION_KEYS} == {
        k: SEPARATION[k] for k in SEPARATION_KEYS
    }  # no settings of its own: fitted from the ones for all images
    pooled = {k: v for k, v in calibrated.items() if k not in ("by_modality", "modality_rule")}
    assert pooled == {**SEPARATION, "outline": None} and calibrated["modality_rule"] == RULE
    assert table.groupby("modality")["images"].first().to_dict() == {
        "stained": 2,
        "fluorescence": 1,
    }
    assert set(table.loc[table["modality"] == "stained", "seed_depth"]) == {2.0}
    report = report_calibration(
        probabilities, coloured, pd.DataFrame({"image_id": ids}), previous, calibrated
    )
    assert report[["separation", "modality", "images"]].values.tolist() == [
        ["before", "stained", 2],
        ["before", "fluorescence", 1],
        ["before", "all", 3],
        ["after", "stained", 2],
        ["after", "fluorescence", 1],
        ["after", "all", 3],
    ]
    assert report["seed_depth"].tolist()[:2] == [2.0, SEPARATION["seed_depth"]]
    assert report["seed_depth"].isna().tolist()[2::3] == [True, True]  # mixed settings
    # The same images with the plan's colour test made stricter: all read as fluorescence.
    strict = {**plan, "modality_rule": {**RULE, "spread_threshold": 10**6}}
    calibrated, table, _ = calibrate_separation(
        probabilities, coloured, strict, params, {"tune": "outline"}
    )
    assert set(table["modality"]) == {"fluorescence"}
    assert (
        calibrated["by_modality"]["stained"]
        == check_separation_plan(plan)["by_modality"]["stained"]
    )
    # The record of the separation in use goes with the new version (its threshold and
    # seeds come from there); calibrating on maps of other settings names them.
    from nucleus_segmentation.segment import SegmentationSettings, record_tuning

    old_scale = SegmentationSettings.from_params({"scale": {"factor": 2.0}})
    now = {"scale": {"mode": "native", "factor": 1.0}}
    with caplog.at_level(logging.WARNING):
        plain, _, _ = calibrate_separation(
            probabilities, coloured, plan, params, {"tune": "outline"}, now
        )
    assert "tuned_on" not in plain and "was tuned on" not in caplog.text  # nothing recorded
    with caplog.at_level(logging.WARNING):
        recorded, _, _ = calibrate_separation(
            probabilities,
            coloured,
            record_tuning(plan, old_scale),
            params,
            {"tune": "outline"},
            now,
        )
    assert recorded["tuned_on"]["scale"]["factor"] == 2.0
    assert "scale.factor: tuned with 2.0, now 1.0" in caplog.text
    assert {k: v for k, v in recorded.items() if k != "tuned_on"} == plain


def test_calibration_leaves_no_setting_a_two_class_model_cannot_run():
    """A plan tuned for a boundary model (interior seeds everywhere) calibrated with a
    two-class model's maps (the whole search): the fitted modality gets a setting it can run,
    the settings for all images become that one, and another modality's interior settings
    are dropped, so the next inference is not refused."""
    images, _ = _test_data()
    interior = {**SEPARATION, "method": "interior"}
    plan = {**interior, "by_modality": {"stained": interior}, "modality_rule": RULE}
    probabilities = {"img0": (images["img0/labels"] > 0).astype("float32")}  # one map: 2 classes
    calibrated, table, _ = calibrate_separation(
        probabilities, images, plan, PARAMS, {"tune": "all"}
    )
    assert set(table["modality"]) == {"fluorescence"}
    fitted = calibrated["by_modality"]["fluorescence"]
    assert fitted["method"] != "interior"
    pooled = {k: v for k, v in calibrated.items() if k not in ("by_modality", "modality_rule")}
    assert pooled == fitted
    assert set(calibrated["by_modality"]) == {"fluorescence"}  # stained's interior dropped
    check_model_separation(TwoClasses(), calibrated)  # what inference checks: no error
    with pytest.raises(DataProblem, match="method 'interior'"):
        check_model_separation(TwoClasses(), plan)  # the plan in use: refused
    params = {**PARAMS, "instances": {**PARAMS["instances"], "outline": [None, 0.3]}}
    with pytest.raises(ParameterError, match="in use for fluorescence images"):
        calibrate_separation(probabilities, images, plan, params, {"tune": "outline"})
