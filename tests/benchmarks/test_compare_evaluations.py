"""The paired comparison of two evaluations (benchmarks/compare_evaluations.py) finds each
evaluation's per-image table in the base reports folder, in an environment's, or among the
tables kept in the repository, and keeps a copy there on request."""

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from compare_evaluations import KEPT, keep, per_image  # noqa: E402


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


def test_a_kept_table_pairs_when_the_reports_folder_has_none_and_keep_copies_once(tmp_path):
    _write(tmp_path, "data/08_reporting", "2026-01-01T00.00.00.000Z", 0.4)
    kept = keep("2026-01-01T00.00.00.000Z", tmp_path)
    assert kept == tmp_path / KEPT / "2026-01-01T00.00.00.000Z.csv"
    # A later checkout: the reports are gone, the kept copy is what is found.
    (
        tmp_path
        / "data/08_reporting/evaluation_per_image.csv/2026-01-01T00.00.00.000Z"
        / "evaluation_per_image.csv"
    ).unlink()
    assert per_image("2026-01-01T00.00.00.000Z", tmp_path).loc["a", "dsb_score"] == 0.4
    assert keep("2026-01-01T00.00.00.000Z", tmp_path) == kept  # already kept: left as it is
    # Where the reports still hold the table, it is theirs that is read.
    _write(tmp_path, "data/08_reporting", "2026-01-02T00.00.00.000Z", 0.6)
    pd.DataFrame({"image_id": ["a"], "dsb_score": [0.1]}).to_csv(
        tmp_path / KEPT / "2026-01-02T00.00.00.000Z.csv", index=False
    )
    assert per_image("2026-01-02T00.00.00.000Z", tmp_path).loc["a", "dsb_score"] == 0.6
