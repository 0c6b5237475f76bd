"""``KerasModelDataset``: a versioned ``.keras`` file, saved atomically, loaded safely."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version

from nucleus_segmentation.datasets.errors import InputDatasetError

# Beside Keras' own entries in the .keras zip: what the project knows about the model that
# Keras does not keep (the preprocessing its training data had).
RECORD = "nucleus_segmentation.json"


@dataclass(frozen=True)
class ModelSource:
    """Where a loaded model came from: set as ``model.loaded_from`` by
    :meth:`KerasModelDataset.load`, so results can record which model made them.

    ``filepath`` is the ``.keras`` file read, ``version`` its Kedro version (the timestamp
    folder; ``None`` when not versioned), ``sha256`` the file's digest.
    """

    filepath: str
    version: str | None
    sha256: str


class KerasModelDataset(AbstractVersionedDataset[Any, Any]):
    """Keras 3 model in the native ``.keras`` format, on the local filesystem.

    Loads with ``safe_mode=True`` (no arbitrary code: the project's layers are registered
    serializable) and works with any Keras backend, unlike kedro-datasets'
    ``TensorFlowModelDataset``, which imports TensorFlow. Saves to a temporary file beside the
    target and renames it into place, so a crash never leaves half a model. A loaded model
    carries ``loaded_from`` (:class:`ModelSource`: file, version, digest) for provenance and
    ``trained_preprocessing`` (the preprocessing settings its training data had, stored in
    the file as ``nucleus_segmentation.json``; None for files saved before that record).
    """

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        allow_missing: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """``allow_missing``: load gives ``None`` instead of an error while no model (no
        version) has been saved yet, for optional inputs such as a baseline to compare with."""
        self.metadata = metadata
        self._allow_missing = allow_missing
        super().__init__(filepath=PurePosixPath(filepath), version=version)

    def load(self) -> Any:
        import keras

        import nucleus_segmentation.model  # noqa: F401  (registers the custom layers)

        if not self._exists():
            if self._allow_missing:
                return None
            if self._version is None or self._version.load is None:
                raise InputDatasetError(
                    f"{self._filepath}: no saved model yet (train one with "
                    "kedro run --pipeline training)"
                )
        path = str(self._get_load_path())
        try:
            model = keras.saving.load_model(path, safe_mode=True)
        except (OSError, ValueError) as exc:
            raise InputDatasetError(f"{path}: not a loadable .keras model ({exc})") from exc
        model.loaded_from = ModelSource(path, self.resolve_load_version(), _sha256(Path(path)))
        model.trained_preprocessing = _read_record(path).get("preprocessing")
        return model

    def save(self, data: Any) -> None:
        target = Path(str(self._get_save_path()))
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{target.stem}.", suffix=".keras", dir=target.parent
        )
        os.close(handle)
        try:
            data.save(temporary)
            preprocessing = getattr(data, "trained_preprocessing", None)
            if preprocessing is not None:
                with zipfile.ZipFile(temporary, "a") as archive:
                    archive.writestr(RECORD, json.dumps({"preprocessing": preprocessing}))
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _exists(self) -> bool:
        try:
            return Path(str(self._get_load_path())).is_file()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "version": self._version}


def _read_record(path: str) -> dict[str, Any]:
    """The project's record inside a ``.keras`` file ({} when it has none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            if RECORD not in archive.namelist():
                return {}
            return json.loads(archive.read(RECORD))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise InputDatasetError(f"{path}: unreadable {RECORD} ({exc})") from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
