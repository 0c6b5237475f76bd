"""The project's `kedro run` reports input problems as one line, and bugs with a traceback."""

import click
import pytest
from kedro.io.core import DatasetError

from nucleus_segmentation.cli import (
    TRACEBACK_VARIABLE,
    cli,
    describe_missing_version,
    report_input_problems,
)
from nucleus_segmentation.datasets.errors import InputDatasetError
from nucleus_segmentation.errors import ParameterError, describe_input_problem


def _raising(error: BaseException):
    def callback():
        raise error

    return report_input_problems(callback)


def _wrapped_by_kedro(inner: BaseException, name: str) -> DatasetError:
    """As Kedro's catalog does: re-raise with the dataset name in front."""
    try:
        raise inner
    except Exception as exc:
        try:
            raise DatasetError(f"{name}: {exc}") from exc
        except DatasetError as outer:
            return outer


def test_an_input_problem_becomes_one_line_naming_dataset_and_file():
    error = _wrapped_by_kedro(InputDatasetError("/data/x.zip: does not exist"), "dsb_raw")
    with pytest.raises(click.ClickException) as caught:
        _raising(error)()
    assert caught.value.message == "dsb_raw: /data/x.zip: does not exist"
    assert caught.value.exit_code == 1


def test_a_parameter_problem_raised_in_a_node_keeps_its_own_message():
    with pytest.raises(click.ClickException) as caught:
        _raising(ParameterError("unknown optimizer 'adamw': use 'adam' or 'sgd'"))()
    assert caught.value.message == "unknown optimizer 'adamw': use 'adam' or 'sgd'"


def test_an_input_problem_deeper_in_the_chain_is_found():
    try:
        try:
            raise ParameterError("tile_size must be positive")
        except ParameterError:
            raise RuntimeError("while running node segment_images") from None
    except RuntimeError as error:
        assert describe_input_problem(error) is None  # `from None` cut the chain
    outer = _wrapped_by_kedro(ParameterError("tile_size must be positive"), "params")
    assert describe_input_problem(RuntimeError("wrapper")) is None
    assert describe_input_problem(outer) == "params: tile_size must be positive"


def test_other_errors_keep_their_traceback():
    with pytest.raises(ZeroDivisionError):
        _raising(ZeroDivisionError("a bug"))()
    with pytest.raises(DatasetError, match="plain"):  # Kedro's own, not marked as input
        _raising(DatasetError("plain"))()


def test_the_traceback_variable_shows_input_problems_in_full(monkeypatch):
    monkeypatch.setenv(TRACEBACK_VARIABLE, "1")
    with pytest.raises(ParameterError):
        _raising(ParameterError("bad"))()


def test_the_project_cli_replaces_run_and_keeps_its_options():
    from kedro.framework.cli.project import run as kedro_run

    run = cli.commands["run"]
    assert run is not kedro_run and run.callback is not kedro_run.callback
    assert {p.name for p in run.params} == {p.name for p in kedro_run.params}
    assert "pipeline" in {p.name for p in run.params}


def test_an_input_no_stage_has_written_yet_names_the_pipeline_to_run_first():
    from kedro.io.core import VersionNotFoundError
    from kedro.pipeline import node, pipeline

    def step(x):
        return x

    stage = pipeline([node(step, "ingested_images", "preprocessed_images", name="pre")])
    both = stage + pipeline([node(step, "raw", "ingested_images", name="ingest")])
    registered = {"preprocessing": stage, "data_processing": both, "__default__": both}
    missing = VersionNotFoundError(
        "Did not find any versions for NpzDataset(filepath=PurePosixPath("
        "'/p/data/04_feature/preprocessed_images.npz'), protocol='file')"
    )
    error = _wrapped_by_kedro(missing, "preprocessed_images")
    assert describe_missing_version(error, registered) == (
        "preprocessed_images: no saved version yet in /p/data/04_feature/preprocessed_images.npz"
        ": run `kedro run --pipeline preprocessing` first (or `--pipeline data_processing`, "
        "which includes it)"
    )
    assert describe_missing_version(DatasetError("plain"), registered) is None
