"""The held-out calibration benchmark's statistics and the checkpoint averaging it sits beside
(benchmarks/bench_calibration.py, benchmarks/checkpoint_as_model.py)."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_calibration import paired_interval, settings_text  # noqa: E402
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


def test_checkpoint_mean_averages_floats_and_keeps_integer_state():
    floats = (np.array([1.0, 3.0], np.float32), np.array([3.0, 5.0], np.float32))
    averaged = _mean(floats)
    assert averaged.dtype == np.float32
    np.testing.assert_array_equal(averaged, [2.0, 4.0])
    counters = (np.array([7], np.int64), np.array([9], np.int64))
    np.testing.assert_array_equal(_mean(counters), [7])
