"""Errors caused by the user's data or settings rather than by the code.

Raised with a message that names the file, dataset or parameter and says what is wrong.
The project's ``kedro run`` (``cli.py``) prints that message alone and exits with status 1
instead of a traceback through Kedro and the libraries; any other exception keeps its full
traceback, because it is a bug to report.
"""

from __future__ import annotations


class InputProblem(Exception):
    """Marker base: the input or the configuration is wrong, not the code. (Datasets raise
    :class:`nucleus_segmentation.datasets.errors.InputDatasetError`, a Kedro
    ``DatasetError`` that is also an input problem.)"""


class ParameterError(ValueError, InputProblem):
    """A parameter (``conf/*/parameters*.yml`` or ``--params``) that cannot work."""


class DataProblem(ValueError, InputProblem):
    """The data, as a whole, cannot give what the stage needs (e.g. an empty split)."""


def refuse_unknown_keys(params, known, section: str) -> None:
    """Stop with a ParameterError naming ``section`` (e.g. ``params:model``), the keys of
    ``params`` that are not in ``known``, and the known ones; nothing when all are known."""
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ParameterError(f"{section}: unknown keys {unknown}; known: {sorted(known)}")


def find_input_problem(error: BaseException) -> BaseException | None:
    """The first :class:`InputProblem` in ``error``'s chain of causes, or ``None``."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, InputProblem):
            return current
        seen.add(id(current))
        # as Python's traceback walks it: the explicit cause, else the implicit context
        # unless ``raise ... from None`` suppressed it
        suppressed = current.__suppress_context__
        current = current.__cause__ or (None if suppressed else current.__context__)
    return None


def describe_input_problem(error: BaseException) -> str | None:
    """The message to show for ``error`` when its chain holds an :class:`InputProblem`:
    the outermost message that contains the problem's own (Kedro prefixes the dataset
    name), else the problem's message; ``None`` when it is not an input problem."""
    problem = find_input_problem(error)
    if problem is None:
        return None
    own = str(problem)
    outer = str(error)
    return outer if own in outer else own
