"""The paired comparison of two evaluations (benchmarks/compare_evaluations.py) finds each
evaluation's per-image table in the base reports folder or in an environment's."""

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from compare_evaluations import per_image  # noqa: E402


def _write(root: Path, folder: str, version: str, dsb: float) -> None:
    path = root / folder / "evaluation_per_image.csv" / version / "evaluation_per_image.csv"
    path.parent.mkdir(parents=True)
    pd.DataFrame({"image_id": ["a"], "dsb_score": [dsb]}).to_csv(path, index=False)


def test_an_evaluation_is_found_in_the_base_or_an_environments_reports(tmp_path):
    _write(tmp_path, "data/08_reporting", "2026-01-01T00.00.00.000Z", 0.4)
    _write(tmp_path, "data/08_reporting/no_smooth", "2026-01-02T00.00.00.000Z", 0.6)
    assert per_image("2026-01-01T00.00.00.000Z", tmp_path).loc["a", "dsb_score"] == 0.4
    assert per_image("2026-01-02T00.00.00.000Z", tmp_path).loc["a", "dsb_score"] == 0.6
    with pytest.raises(SystemExit, match="no such evaluation"):
        per_image("2026-01-03T00.00.00.000Z", tmp_path)
