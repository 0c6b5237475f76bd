"""The datasets' error for bad files, folders or settings (see ``nucleus_segmentation.errors``)."""

from kedro.io.core import DatasetError

from nucleus_segmentation.errors import InputProblem


class InputDatasetError(DatasetError, InputProblem):
    """A dataset cannot load or save because of its file, folder or settings: reported by
    ``kedro run`` as its message alone."""
