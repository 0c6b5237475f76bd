"""Project CLI: Kedro's own ``kedro run``, reporting input problems without a traceback.

Kedro loads this module's ``cli`` group and lets its commands replace the built-in ones.
``run`` is Kedro's command with every option unchanged; only an error whose chain holds a
:class:`~nucleus_segmentation.errors.InputProblem` (a missing path, an unreadable file, a
bad parameter) is printed as ``Error: <file or parameter>: <problem>`` with exit status 1.
Set ``NUCLEUS_SEGMENTATION_TRACEBACK=1`` to see the full traceback of those too.
"""

from __future__ import annotations

import copy
import functools
import importlib
import os
import pkgutil
import re
from collections.abc import Mapping
from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run

from nucleus_segmentation.errors import describe_input_problem

TRACEBACK_VARIABLE = "NUCLEUS_SEGMENTATION_TRACEBACK"


MISSING_VERSION = re.compile(
    r"^(?P<name>[\w.:-]+): Did not find any versions for .*?filepath=\w*\('(?P<path>[^']+)'"
)


def producing_pipelines(dataset: str, registered: Mapping[str, Any]) -> list[str]:
    """Names of the registered pipelines that write ``dataset``, smallest first (the stage
    before the composites); ``__default__`` left out."""
    writers = [
        (len(p.nodes), name)
        for name, p in registered.items()
        if name != "__default__" and dataset in p.all_outputs()
    ]
    return [name for _, name in sorted(writers)]


def stage_pipelines() -> dict[str, Any]:
    """Every pipeline folder's pipeline by name. (Kedro's registry holds only those the run
    asked for, and its ``find_pipelines`` obeys that filter.)"""
    import nucleus_segmentation.pipelines as package

    return {
        info.name: importlib.import_module(f"{package.__name__}.{info.name}").create_pipeline()
        for info in pkgutil.iter_modules(package.__path__)
    }


def describe_missing_version(
    error: BaseException, registered: Mapping[str, Any] | None = None
) -> str | None:
    """For a run whose input was never written (a fresh clone, a stage not run yet): which
    dataset, where it was looked for, and which pipeline writes it (from ``registered``,
    the project's pipelines by default); else None."""
    current: BaseException | None = error
    while current is not None:
        match = MISSING_VERSION.match(str(current))
        if match:
            if registered is None:
                registered = stage_pipelines()
            name, path = match["name"], match["path"]
            writers = producing_pipelines(name, registered)
            if not writers:
                return f"{name}: no saved version yet in {path}"
            hint = f"run `kedro run --pipeline {writers[0]}` first"
            if len(writers) > 1:
                hint += f" (or `--pipeline {writers[-1]}`, which includes it)"
            return f"{name}: no saved version yet in {path}: {hint}"
        current = current.__cause__
    return None


def report_input_problems(callback):
    """Wrap a click callback: input problems and inputs no stage has written yet become a
    one-line ``click.ClickException``."""

    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except Exception as error:
            if os.environ.get(TRACEBACK_VARIABLE):
                raise
            message = describe_input_problem(error) or describe_missing_version(error)
            if message is None:
                raise
            raise click.ClickException(message) from None

    return wrapper


@click.group(name="nucleus_segmentation")
def cli() -> None:
    """Project commands (Kedro's, with clear errors for bad input)."""


run = copy.copy(kedro_run)
run.callback = report_input_problems(kedro_run.callback)
cli.add_command(run, name="run")
