"""MlflowArtifactHooks: versioned files land in the MLflow run, the exact version saved."""

import mlflow
import pandas as pd
from kedro.io import DataCatalog
from kedro.io.core import Version
from kedro_datasets.pandas import CSVDataset

from nucleus_segmentation.hooks import MlflowArtifactHooks


def _catalog(tmp_path, save_version):
    tracked = CSVDataset(
        filepath=str(tmp_path / "report.csv"),
        version=Version(None, save_version),
        save_args={"index": False},
        metadata={"mlflow": {"artifact": True}},
    )
    untracked = CSVDataset(filepath=str(tmp_path / "other.csv"), save_args={"index": False})
    return DataCatalog({"report": tracked, "other": untracked})


def test_tracked_versioned_file_is_logged_and_untracked_is_not(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    hooks = MlflowArtifactHooks()
    runs = []
    for save_version, value in (("2026-01-01T00.00.00.000Z", 1), ("2026-01-02T00.00.00.000Z", 2)):
        catalog = _catalog(tmp_path, save_version)
        hooks.after_catalog_created(catalog)
        with mlflow.start_run() as run:
            for name in ("report", "other"):
                catalog.save(name, pd.DataFrame({"value": [value]}))
                hooks.after_dataset_saved(name, None, None)
        runs.append(run.info.run_id)
    client = mlflow.MlflowClient()
    for run_id, value in zip(runs, (1, 2), strict=True):
        assert [a.path for a in client.list_artifacts(run_id)] == ["report.csv"]
        local = client.download_artifacts(run_id, "report.csv", str(tmp_path / run_id))
        assert pd.read_csv(local)["value"].tolist() == [value]
    # Both versions stay on disk.
    assert len(list((tmp_path / "report.csv").iterdir())) == 2


def test_without_an_active_run_nothing_is_logged(tmp_path):
    hooks = MlflowArtifactHooks()
    catalog = _catalog(tmp_path, "2026-01-01T00.00.00.000Z")
    hooks.after_catalog_created(catalog)
    catalog.save("report", pd.DataFrame({"value": [1]}))
    assert mlflow.active_run() is None
    hooks.after_dataset_saved("report", None, None)  # must not start a run or raise
    assert mlflow.active_run() is None
