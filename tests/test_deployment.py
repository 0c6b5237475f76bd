"""The pipelines as an Airflow DAG (kedro-airflow), as docs/running.md says to make it."""

import ast

import pytest

from tests.project import cli, copy_project

pytestmark = pytest.mark.slow


def test_kedro_airflow_writes_a_dag_that_keeps_in_memory_steps_together(tmp_path):
    project = copy_project(tmp_path / "project")
    dags = tmp_path / "dags"
    result = cli(
        project,
        "airflow",
        "create",
        "--pipelines",
        "__default__",
        "-g",
        "memory",
        "-t",
        str(dags),
        "--env",
        "local",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (dag,) = dags.glob("*.py")
    source = dag.read_text()
    ast.parse(source)  # valid Python (Airflow itself is not installed here)
    tasks = [line.split('"')[1] for line in source.splitlines() if "@task(task_id=" in line]
    assert "ingest-dsb-images" in tasks and "train-segmentation-model" in tasks
    # Nodes joined by in-memory datasets run in one task: the validation probabilities
    # never leave the process that tunes the separation on them.
    assert "predict-validation-images-tune-instance-separation" in tasks
    assert 'tasks["train-segmentation-model"] >> tasks["log-model-to-mlflow"]' in source
