"""What each MLflow run is, for people comparing runs in the MLflow UI.

kedro-mlflow opens one MLflow run per ``kedro run`` and logs its parameters; the hook here
adds what the UI needs to tell runs apart and trace them:

- a name ``<pipeline> <model> <data>``, e.g. ``training attention_unet stage1_train``, and
  tags ``kedro_pipeline``, ``kedro_env``, ``model_name``, ``data``, ``git_commit`` and
  ``keras.backend`` / ``keras.devices`` / ``keras.precision`` (where the model ran, in what
  precision);
- the version of every versioned dataset read (``input.<dataset>.version``) and written
  (``output.<dataset>.version``), so a training run names the data version it trained on and
  an evaluation run the model version it scored;
- the data read as MLflow dataset inputs (name, digest, source path, size: the UI's Dataset
  column);
- on an evaluation run, ``scored_training_run``: the training run that wrote the model;
- a registered-model version (kedro-mlflow registers it, ``conf/base/catalog.yml``)
  tagged with the data version it was trained on;
- a run that stopped on an input error (a missing file, a bad parameter) before any node
  finished is tagged ``outcome: input error`` and deleted (soft: ``mlflow gc`` or the UI's
  "deleted" filter still has it), so such runs never bury real ones; one that stopped later
  keeps its place, tagged the same way.

The experiment is tagged as a model-development experiment, so the MLflow UI opens it on
its runs table rather than on the GenAI overview.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import warnings
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from kedro.framework.hooks import hook_impl
from kedro.io.core import AbstractVersionedDataset, DatasetError

from nucleus_segmentation.errors import describe_input_problem
from nucleus_segmentation.model.distribution import device_report
from nucleus_segmentation.model.precision import resolve_precision

logger = logging.getLogger(__name__)

# Catalog layers (metadata kedro-viz.layer) whose datasets are data, logged as MLflow inputs.
DATA_LAYERS = ("raw", "intermediate", "primary", "feature", "model_input")
# Layers whose dataset versions are tagged on the run (reports are its artifacts instead).
TRACKED_LAYERS = (*DATA_LAYERS, "models")
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# Datasets whose loaded version tells which data a run used (the first one read names it).
DATA_VERSION_SOURCES = ("data_split", "image_metadata", "ingested_images")


def data_label(raw_data: str | os.PathLike) -> str:
    """Short name of a raw data source: ``stage1_train`` for ``../x/stage1_train.zip``,
    ``dsb2018_sample`` for the embedded sample folder."""
    return PurePosixPath(str(raw_data).rstrip("/")).stem or str(raw_data)


def run_name(pipeline: str, model: str, data: str) -> str:
    return " ".join(part for part in (pipeline, model, data) if part)


def dataset_file(dataset: Any, version: str | None) -> str | None:
    """The file a file-based dataset reads or writes for ``version``. Kedro has no public
    accessor for it, so this one place asks the dataset's own ``_get_versioned_path`` (which
    a dataset may override: ``InferenceOutputDataset`` names its manifest) and
    ``_filepath``; versions come from the public ``resolve_load_version`` /
    ``resolve_save_version``."""
    filepath = getattr(dataset, "_filepath", None)
    if filepath is None:
        return None
    if version and isinstance(dataset, AbstractVersionedDataset):
        return str(dataset._get_versioned_path(version))
    return str(filepath)


def layer_of(dataset: Any) -> str | None:
    """The dataset's catalog layer (``metadata: kedro-viz: layer``), if any."""
    return ((getattr(dataset, "metadata", None) or {}).get("kedro-viz") or {}).get("layer")


def loaded_version(dataset: Any) -> str | None:
    """The version just loaded; None when unversioned or when there is none (a dataset that
    may be missing, like the baseline model before it is trained, loads without one)."""
    if isinstance(dataset, AbstractVersionedDataset):
        try:
            return dataset.resolve_load_version()
        except DatasetError:
            return None
    return None


def saved_version(dataset: Any) -> str | None:
    if isinstance(dataset, AbstractVersionedDataset):
        return dataset.resolve_save_version()
    return None


def describe_size(data: Any) -> str:
    """``120 rows`` for a table (``120 images`` for one row per image), ``30 images`` for an
    image bundle or a raw DSB source, else ``""``."""
    if isinstance(data, pd.DataFrame):
        unit = "images" if "image_id" in data.columns else "rows"
        return f"{len(data)} {unit}"
    if hasattr(data, "image_ids"):  # a DSB source (zip or folder)
        return f"{len(data.image_ids)} images"
    if isinstance(data, Mapping) and data and all(isinstance(k, str) for k in data):
        from nucleus_segmentation import bundle

        return f"{len(bundle.sample_ids(data))} images"
    return ""


def git_commit() -> str:
    """HEAD of the project's repository (with ``-dirty`` for local changes), or "unknown"."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


class MlflowRunHooks:
    """Names, tags, dataset inputs and lineage of the active MLflow run (module docstring).

    Runs last among ``before_pipeline_run`` hooks, after kedro-mlflow has opened the run;
    with no active run (tracking disabled) it does nothing.
    """

    def __init__(self) -> None:
        self._env, self._model, self._params = "local", "", {}
        self._catalog = None
        self._run_id: str | None = None
        self._pipeline, self._data = "", ""
        self._logged_inputs: set[str] = set()
        self._nodes_done = 0

    @hook_impl
    def after_context_created(self, context) -> None:
        self._env = context.env or "local"
        self._model = str(context.config_loader["globals"].get("model_name", ""))
        self._params = context.params

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        self._catalog = catalog

    def _active(self):
        import mlflow

        run = mlflow.active_run()
        return run if run is not None and run.info.run_id == self._run_id else None

    @hook_impl(trylast=True)  # after kedro-mlflow's hook has started the run
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline) -> None:
        import mlflow

        run = mlflow.active_run()
        if run is None:
            return
        self._run_id = run.info.run_id
        self._pipeline = ",".join(run_params.get("pipeline_names") or []) or "__default__"
        node_names = {n.name for n in pipeline.nodes}
        if "ingest_dsb_images" in node_names:
            self._data = data_label(self._params.get("raw_data", ""))
        elif "segment_images" in node_names:
            self._data = data_label(self._params.get("inference_input", ""))
        elif "ingest_calibration_images" in node_names:
            self._data = data_label(self._params.get("calibration_input", ""))
        mlflow.set_experiment_tags(EXPERIMENT_KIND)
        mlflow.set_tags(
            {
                "kedro_pipeline": self._pipeline,
                "kedro_env": self._env,
                "model_name": self._model,
                "git_commit": git_commit(),
                **{f"keras.{k}": v for k, v in device_report().items()},
                "keras.precision": self._precision(node_names),
            }
        )
        self._name_run()

    def _precision(self, node_names: set[str]) -> str:
        """What the network computes in this run: ``training.precision`` where the run
        trains, else ``segmentation.precision`` (evaluation, inference), resolved."""
        training = "train_segmentation_model" in node_names
        group = "training" if training else "segmentation"
        name = str((self._params.get(group) or {}).get("precision", "auto"))
        return resolve_precision(name)

    def _name_run(self) -> None:
        import mlflow

        tags = {"mlflow.runName": run_name(self._pipeline, self._model, self._data)}
        if self._data:
            tags["data"] = self._data
        mlflow.set_tags(tags)

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data: Any, node) -> None:
        import mlflow

        if self._active() is None or self._catalog is None or dataset_name.startswith("params:"):
            return
        dataset = self._catalog.get(dataset_name)
        version = loaded_version(dataset)
        layer = layer_of(dataset)
        if version and layer in TRACKED_LAYERS:
            mlflow.set_tag(f"input.{dataset_name}.version", version)
        if dataset_name in DATA_VERSION_SOURCES and not self._data:
            self._data = self._producer_label(dataset_name, version) or describe_size(data)
            self._name_run()
        if dataset_name == "trained_model" and version:
            self._link_training_run(version)
        if layer in DATA_LAYERS and dataset_name not in self._logged_inputs:
            self._logged_inputs.add(dataset_name)
            self._log_input(dataset_name, dataset, version, data)

    def _runs_with_tag(self, key: str, value: str) -> list:
        import mlflow

        run = mlflow.active_run()
        return mlflow.search_runs(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"tags.`{key}` = '{value}'",
            output_format="list",
            max_results=1,
        )

    def _producer_label(self, dataset_name: str, version: str | None) -> str:
        """The data label of the run that wrote this version of the dataset."""
        if not version:
            return ""
        runs = self._runs_with_tag(f"output.{dataset_name}.version", version)
        return runs[0].data.tags.get("data", "") if runs else ""

    def _link_training_run(self, model_version: str) -> None:
        import mlflow

        runs = self._runs_with_tag("output.trained_model.version", model_version)
        if runs and runs[0].info.run_id != self._run_id:
            training = runs[0]
            mlflow.set_tags(
                {
                    "scored_training_run": training.info.run_id,
                    "mlflow.note.content": (
                        f"Scores the model of training run `{training.info.run_name}` "
                        f"({training.info.run_id}), model version {model_version}."
                    ),
                }
            )

    def _log_input(self, name: str, dataset: Any, version: str | None, data: Any) -> None:
        import mlflow
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        path = dataset_file(dataset, version) or str(getattr(data, "path", "") or "")
        if not path:
            return
        # Versions are never overwritten, so the path of a version identifies its content.
        digest = hashlib.sha256(path.encode()).hexdigest()[:10]
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": a local file
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(Path(path).resolve()))
        tags = {"version": version or "unversioned"}
        size = describe_size(data)
        if size:
            tags["size"] = size
        if Path(path).is_file():
            tags["bytes"] = str(Path(path).stat().st_size)
        mlflow.log_input(MetaDataset(source, name=name, digest=digest), context=name, tags=tags)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        import mlflow

        if self._active() is None or self._catalog is None:
            return
        if dataset_name == "mlflow_model":
            self._tag_registered_version()
            return
        dataset = self._catalog.get(dataset_name)
        version = saved_version(dataset)
        if version and layer_of(dataset) in TRACKED_LAYERS:
            mlflow.set_tag(f"output.{dataset_name}.version", version)

    def _tag_registered_version(self) -> None:
        """Tag the model version kedro-mlflow just registered with the run's data."""
        import mlflow

        client = mlflow.MlflowClient()
        run = client.get_run(self._run_id)
        data_version = next(
            (
                run.data.tags[f"input.{n}.version"]
                for n in ("data_split", "augmented_images")
                if f"input.{n}.version" in run.data.tags
            ),
            "",
        )
        for version in client.search_model_versions(f"run_id = '{self._run_id}'"):
            for key, value in (
                ("data", self._data),
                ("data_version", data_version),
                ("kedro_env", self._env),
            ):
                if value:
                    client.set_model_version_tag(version.name, version.version, key, value)

    @hook_impl
    def after_node_run(self, node, outputs) -> None:
        self._nodes_done += 1

    @hook_impl(trylast=True)  # after kedro-mlflow has ended the run as failed
    def on_pipeline_error(self, error: Exception) -> None:
        import mlflow

        message = describe_input_problem(error)
        if message is None or self._run_id is None:
            return
        client = mlflow.MlflowClient()
        name = run_name(self._pipeline, self._model, self._data)
        client.set_tag(self._run_id, "mlflow.runName", f"{name} (input error)")
        client.set_tag(self._run_id, "outcome", "input error")
        client.set_tag(self._run_id, "mlflow.note.content", f"Stopped on an input error: {message}")
        if self._nodes_done == 0:
            client.delete_run(self._run_id)
            logger.info(
                "MLflow run %s stopped on an input error before any work and was deleted "
                "(restorable from the UI's deleted runs)",
                self._run_id,
            )
