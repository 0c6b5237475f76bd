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
import os

import click
from kedro.framework.cli.project import run as kedro_run

from nucleus_segmentation.errors import describe_input_problem

TRACEBACK_VARIABLE = "NUCLEUS_SEGMENTATION_TRACEBACK"


def report_input_problems(callback):
    """Wrap a click callback: input problems become a one-line ``click.ClickException``."""

    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except Exception as error:
            message = describe_input_problem(error)
            if message is None or os.environ.get(TRACEBACK_VARIABLE):
                raise
            raise click.ClickException(message) from None

    return wrapper


@click.group(name="nucleus_segmentation")
def cli() -> None:
    """Project commands (Kedro's, with clear errors for bad input)."""


run = copy.copy(kedro_run)
run.callback = report_input_problems(kedro_run.callback)
cli.add_command(run, name="run")
