"""The held-out calibration benchmark's statistics and the checkpoint averaging it sits beside
(benchmarks/bench_calibration.py, benchmarks/checkpoint_as_model.py)."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_calibration import paired_interval, run_table, settings_text  # noqa: E402
from checkpoint_as_model import _mean  # noqa: E402


def test_paired_interval_of_a_constant_difference_is_that_difference():
    differences = pd.Series([0.1, 0.1, 0.1, 0.1])
    assert paired_interval(differences, pd.Series(["a", "a", "b", "c"]), seed=0) == (
        pytest.approx([0.1, 0.1, 0.1])
    )


def test_paired_interval_resamples_whole_clusters():
    # Two clusters: every resample's mean is a mix of the two cluster means (0 and 1),
    # weighted by their image counts (3 and 1), so it can only be 0, 0.25 or 1.
    differences = pd.Series([0.0, 0.0, 0.0, 1.0])
    mean, low, high = paired_interval(differences, pd.Series(["a", "a", "a", "b"]), seed=1)
    assert mean == pytest.approx(0.25)
    assert low == pytest.approx(0.0) and high == pytest.approx(1.0)
    again = paired_interval(differences, pd.Series(["a", "a", "a", "b"]), seed=1)
    assert again == [mean, low, high]


def test_settings_text_writes_null_for_no_outline():
    assert settings_text({"threshold": 0.6, "outline": None}) == "threshold 0.6, outline null"


def _run(befores: list[dict]) -> dict:
    rows = [
        {
            "rows": f"{name}: validation -> test",
            "calibration_images": 2,
            "scored_images": 1,
            "before": {"dsb_score": 0.5},
            "after": {"dsb_score": 0.6},
            "paired_dsb": [0.1, 0.0, 0.2],
            "clusters": 1,
            "interval_over": "images",
            "separation_before": before,
            "separation_after": {"threshold": 0.7},
        }
        for name, before in zip(("stained", "fluorescence", "brightfield"), befores, strict=True)
    ]
    pooled = {**rows[0], "rows": "own-acquisition calibration, 1 groups pooled"}
    del pooled["separation_before"], pooled["separation_after"]
    return {
        "rows": [*rows, pooled],
        "model_version": "m",
        "separation_version": "s",
        "data_version": "d",
        "handful": 3,
        "seed": 42,
        "outline_only": True,
        "machine": "avx2",
    }


def test_the_table_header_names_each_modalitys_starting_settings_of_a_per_modality_plan():
    one = run_table(_run([{"threshold": 0.6}] * 3))
    assert "tuned on the validation split: threshold 0.6)" in one
    per_modality = run_table(_run([{"threshold": 0.5}, {"threshold": 0.6}, {"threshold": 0.6}]))
    assert (
        "per modality; each row starts from its images' settings: threshold 0.5 (stained); "
        "threshold 0.6 (fluorescence, brightfield))" in per_modality
    )


def test_checkpoint_mean_averages_floats_and_keeps_integer_state():
    floats = (np.array([1.0, 3.0], np.float32), np.array([3.0, 5.0], np.float32))
    averaged = _mean(floats)
    assert averaged.dtype == np.float32
    np.testing.assert_array_equal(averaged, [2.0, 4.0])
    counters = (np.array([7], np.int64), np.array([9], np.int64))
    np.testing.assert_array_equal(_mean(counters), [7])
