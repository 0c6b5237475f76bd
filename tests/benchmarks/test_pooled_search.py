"""Benchmarks read an evaluation's separation search by its pooled rows: the per-modality
searches that follow them in ``separation_search.csv`` (their own ``modality``) are not the
setting for every image."""

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _common import pooled_search, pooled_separation  # noqa: E402


def _rows(modality, scores):
    return pd.DataFrame(
        {"threshold": [0.5, 0.7][: len(scores)], "validation_dsb_score": scores, "images": 9}
    ).assign(modality=modality)


def test_the_pooled_rows_give_the_setting_for_every_image():
    search = pd.concat(
        [_rows("all", [0.55, 0.50]), _rows("stained", [0.90]), _rows("fluorescence", [0.95])],
        ignore_index=True,
    )
    assert pooled_search(search)["validation_dsb_score"].tolist() == [0.55, 0.50]
    assert "modality" not in pooled_search(search).columns
    assert pooled_separation(search) == (0.55, {"threshold": 0.5})
    # Tables written before the per-modality search have no modality column.
    assert pooled_separation(_rows("all", [0.6]).drop(columns="modality")) == (
        0.6,
        {"threshold": 0.5},
    )
