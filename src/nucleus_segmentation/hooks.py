"""Project hooks: node timings in the log, progress settings, and versioned files logged as
MLflow artifacts (run names, tags and lineage: :mod:`nucleus_segmentation.tracking`)."""

from __future__ import annotations

import logging
import time
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node

from nucleus_segmentation.tracking import dataset_file, saved_version

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


class ParallelHooks:
    """Applies ``params:parallel`` (this machine's processes, or a Dask cluster) to
    :mod:`nucleus_segmentation.parallel` for the run, and closes the run's Dask client (and
    the LocalCluster it started) when the run ends, failed or not."""

    @hook_impl
    def after_context_created(self, context) -> None:
        from nucleus_segmentation import parallel

        parallel.configure(parallel.ParallelSettings.from_params(context.params.get("parallel")))

    @hook_impl
    def after_pipeline_run(self) -> None:
        from nucleus_segmentation import parallel

        parallel.shutdown()

    @hook_impl
    def on_pipeline_error(self) -> None:
        from nucleus_segmentation import parallel

        parallel.shutdown()


class ProgressHooks:
    """Applies ``params:progress`` (how often long per-item work reports its progress) to
    :mod:`nucleus_segmentation.progress` once the run's parameters are known."""

    @hook_impl
    def after_context_created(self, context) -> None:
        from nucleus_segmentation.progress import ProgressSettings, configure

        configure(ProgressSettings(**(context.params.get("progress") or {})))


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
        path = dataset_file(dataset, saved_version(dataset))
        mlflow.log_artifact(path, artifact_path=settings.get("artifact_path"))
