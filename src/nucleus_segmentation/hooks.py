"""Project hooks: node timings in the log, so slow stages are visible in every run."""

from __future__ import annotations

import logging
import subprocess
import time
from typing import Any

from kedro.framework.hooks import hook_impl
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
