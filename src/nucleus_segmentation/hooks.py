"""Project hooks: node timings in the log, MLflow run names and tags, and versioned
files logged as MLflow artifacts."""

from __future__ import annotations

import logging
import subprocess
import time
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io.core import AbstractVersionedDataset
from kedro.pipeline import Node

logger = logging.getLogger(__name__)


class NodeTimingHooks:
    """Logs ``Node '<name>' took X.XX s`` after every node (load and save included)."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    @hook_impl
    def before_node_run(self, node: Node, inputs: dict[str, Any]) -> None:
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Node, outputs: dict[str, Any]) -> None:
        started = self._started.pop(node.name, None)
        if started is not None:
            logger.info("Node '%s' took %.2f s", node.name, time.perf_counter() - started)


class ProgressHooks:
    """Applies ``params:progress`` (how often long per-item work reports its progress) to
    :mod:`nucleus_segmentation.progress` once the run's parameters are known."""

    @hook_impl
    def after_context_created(self, context) -> None:
        from nucleus_segmentation.progress import ProgressSettings, configure

        configure(ProgressSettings(**(context.params.get("progress") or {})))


class MlflowRunTagsHooks:
    """Names the MLflow run ``<pipeline>@<env>`` and tags it with the pipeline, the Kedro
    environment and the git commit, so runs can be told apart and traced to code.

    Runs last among ``before_pipeline_run`` hooks, after kedro-mlflow has opened the run;
    with no active run (tracking disabled) it does nothing.
    """

    def __init__(self) -> None:
        self._env = "local"

    @hook_impl
    def after_context_created(self, context) -> None:
        self._env = context.env or "local"

    @hook_impl(trylast=True)  # after kedro-mlflow's hook has started the run
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        import mlflow

        if mlflow.active_run() is None:
            return
        pipeline = ",".join(run_params.get("pipeline_names") or []) or "__default__"
        mlflow.set_tags(
            {
                "mlflow.runName": f"{pipeline}@{self._env}",
                "kedro_pipeline": pipeline,
                "kedro_env": self._env,
                "git_commit": _git_commit(),
            }
        )


class MlflowArtifactHooks:
    """Logs the file a dataset has just saved to the active MLflow run when its catalog entry
    says so (``metadata: {mlflow: {artifact: true}}``), the exact version just written.

    kedro-mlflow's ``MlflowArtifactDataset`` gives a wrapped versioned dataset a save version
    of its own, which the catalog refuses (all versioned datasets of a run share one), so it
    cannot keep every run's file on disk; this hook can. With no active run it does nothing.
    """

    def __init__(self) -> None:
        self._catalog = None

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        self._catalog = catalog

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Node) -> None:
        import mlflow

        if self._catalog is None or mlflow.active_run() is None:
            return
        dataset = self._catalog.get(dataset_name)
        settings = (getattr(dataset, "metadata", None) or {}).get("mlflow") or {}
        if settings.get("artifact") is not True:
            return
        mlflow.log_artifact(str(saved_path(dataset)), artifact_path=settings.get("artifact_path"))


def saved_path(dataset: Any) -> str:
    """The local file a file-based dataset saved last: the run's version for a versioned one."""
    if isinstance(dataset, AbstractVersionedDataset) and dataset._version is not None:
        save_version = dataset._version.save
        if save_version:
            return str(dataset._get_versioned_path(save_version))
    return str(dataset._filepath)


def _git_commit() -> str:
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
