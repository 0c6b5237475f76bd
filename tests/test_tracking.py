"""The MLflow run naming and dataset-description helpers (the hook itself runs end to end in
tests/test_run.py and tests/test_users_view.py)."""

import numpy as np
import pandas as pd
from kedro.io.core import Version
from kedro_datasets.pandas import CSVDataset

from nucleus_segmentation import bundle
from nucleus_segmentation.tracking import (
    data_label,
    dataset_file,
    describe_size,
    layer_of,
    loaded_version,
    run_name,
)


def test_runs_are_named_by_pipeline_model_and_data():
    assert data_label("../shared/dsb2018/stage1_train.zip") == "stage1_train"
    assert data_label("data/01_raw/dsb2018_sample/") == "dsb2018_sample"
    assert run_name("training", "attention_unet", "stage1_train") == (
        "training attention_unet stage1_train"
    )
    assert run_name("inference", "unet_baseline", "") == "inference unet_baseline"


def test_sizes_of_tables_and_image_bundles():
    table = pd.DataFrame({"a": range(7)})
    images = bundle.pack((f"i{k}", {"image": np.zeros((2, 2), np.uint8)}) for k in range(3))
    assert describe_size(table) == "7 rows"
    assert describe_size(pd.DataFrame({"image_id": ["a", "b"]})) == "2 images"
    assert describe_size(images) == "3 images"
    assert describe_size(object()) == ""


def test_the_file_of_a_version_and_a_missing_version(tmp_path):
    dataset = CSVDataset(
        filepath=str(tmp_path / "t.csv"),
        version=Version(None, "2026-01-01T00.00.00.000Z"),
        metadata={"kedro-viz": {"layer": "primary"}},
    )
    assert loaded_version(dataset) is None  # nothing saved yet: no version, no error
    dataset.save(pd.DataFrame({"a": [1]}))
    assert loaded_version(dataset) == "2026-01-01T00.00.00.000Z"
    assert dataset_file(dataset, "2026-01-01T00.00.00.000Z") == str(
        tmp_path / "t.csv" / "2026-01-01T00.00.00.000Z" / "t.csv"
    )
    assert layer_of(dataset) == "primary" and layer_of(object()) is None


def test_the_run_records_the_precision_of_what_it_runs(monkeypatch):
    """A training run records training.precision resolved; any other run
    segmentation.precision resolved."""
    import nucleus_segmentation.tracking as tracking

    asked = []

    def resolve(name):
        asked.append(name)
        return f"resolved {name}"

    monkeypatch.setattr(tracking, "resolve_precision", resolve)
    hooks = tracking.MlflowRunHooks()
    hooks._params = {"training": {"precision": "float32"}, "segmentation": {"precision": "auto"}}
    assert hooks._precision({"train_segmentation_model", "x"}) == "resolved float32"
    assert hooks._precision({"evaluate_on_test_images"}) == "resolved auto"
    hooks._params = {"training": {"precision": "float32"}}
    assert hooks._precision({"segment_folder"}) == "resolved auto"
    assert asked == ["float32", "auto", "auto"]
