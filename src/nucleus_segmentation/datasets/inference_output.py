"""``InferenceOutputDataset``: one inference run as a new ``<path>/<UTC timestamp>/`` folder.

The run is written under a hidden temporary name beside its target and renamed into place
when complete, so a crash leaves no half-written folder that looks like a result (only a
hidden ``.<timestamp>.*.partial``, removed on any Python-level failure), and an existing
folder is never written into.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np
import pandas as pd
from kedro.io.core import AbstractVersionedDataset, DatasetError, Version

from nucleus_segmentation.datasets.errors import InputDatasetError
from nucleus_segmentation.imaging.codec import encode_png

MANIFEST = "manifest.json"
TABLES = {"nuclei": "nuclei.csv", "submission": "submission.csv", "report": "report.csv"}
LABEL_SUFFIXES = {"tiff": ".tif", "png": ".png"}


class InferenceOutputDataset(AbstractVersionedDataset[Mapping[str, Any], Path]):
    """Saves the result of segmenting a folder of images; loads the latest result's folder.

    ``save`` takes a mapping with these keys (per-image values are arrays, or functions
    returning one, called one at a time while writing, as ``PartitionedDataset``'s lazy
    saving)::

        masks:      {image id: HxW uint8 0/255}          -> masks/<image id>.png
        labels:     {image id: HxW uint16 label map}     -> labels/<image id>.tif (or .png)
        overlays:   {image id: HxWx3 uint8 RGB}          -> overlays/<image id>.png
        nuclei:     DataFrame                            -> nuclei.csv
        submission: DataFrame (ImageId, EncodedPixels)   -> submission.csv
        report:     DataFrame (file, problem)            -> report.csv
        manifest:   JSON-able dict                       -> manifest.json (written last)

    Image ids may contain ``/`` (images in subfolders): the output mirrors the subfolders.
    The folder is named by the save version: Kedro's run timestamp with ``versioned: true``
    (``2026-01-31T12.00.00.000Z``, UTC), a fresh timestamp otherwise. ``load`` returns the
    :class:`~pathlib.Path` of the latest complete result, or of ``--load-versions``' pick.

    Example catalog entry::

        inference_output:
          type: nucleus_segmentation.datasets.InferenceOutputDataset
          path: ${runtime_params:inference_output, data/07_model_output/inference}
          versioned: true
    """

    def __init__(
        self,
        *,
        path: str,
        label_format: str = "tiff",
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Args:
        path: the folder that receives one timestamped subfolder per run (local).
        label_format: ``tiff`` (16-bit TIFF) or ``png`` (16-bit PNG) for the label maps.
        version: set by Kedro from ``versioned: true``; without it every save still gets a
            new timestamp.
        metadata: free-form (kedro-viz layer).
        """
        if label_format not in LABEL_SUFFIXES:
            raise InputDatasetError(
                f"InferenceOutputDataset: label_format {label_format!r}, use one of "
                f"{sorted(LABEL_SUFFIXES)}"
            )
        self._label_format = label_format
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(Path(os.path.normpath(path)).as_posix()),
            version=version or Version(None, None),
        )

    def _get_versioned_path(self, version: str) -> PurePosixPath:
        # A version is complete when its manifest exists: it is the last file written.
        return super()._get_versioned_path(version).parent / MANIFEST

    def load(self) -> Path:
        return Path(str(self._get_load_path())).parent

    def save(self, data: Mapping[str, Any]) -> None:
        expected = {"masks", "labels", "overlays", "manifest", *TABLES}
        if not isinstance(data, Mapping) or set(data) != expected:
            keys = sorted(data) if isinstance(data, Mapping) else type(data).__name__
            raise DatasetError(
                f"InferenceOutputDataset saves a mapping of {sorted(expected)}, got {keys}"
            )
        version = str(self.resolve_save_version())
        root = Path(str(self._filepath))
        target = root / version
        self._refuse_existing(target)
        try:
            root.mkdir(parents=True, exist_ok=True)
            # os.mkdir, not tempfile.mkdtemp: the result keeps the umask's permissions, not 0700.
            temporary = root / f".{version}.{uuid.uuid4().hex[:8]}.partial"
            temporary.mkdir()
        except OSError as exc:
            raise InputDatasetError(
                f"{root}: cannot create the inference output folder ({exc})"
            ) from exc
        try:
            self._write(temporary, data, version)
            self._refuse_existing(target)  # another run may have finished meanwhile
            os.rename(temporary, target)
        except OSError as exc:
            shutil.rmtree(temporary, ignore_errors=True)
            raise InputDatasetError(
                f"{target}: could not write the inference result ({exc})"
            ) from exc
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise

    def _refuse_existing(self, target: Path) -> None:
        if target.exists():
            raise InputDatasetError(
                f"{target} already exists: an inference result is never overwritten. Run "
                "again for a new timestamp, or choose another folder with "
                "--params inference_output=<folder>."
            )

    def _write(self, folder: Path, data: Mapping[str, Any], version: str) -> None:
        per_image = {
            "masks": ("masks", ".png"),
            "labels": ("labels", LABEL_SUFFIXES[self._label_format]),
            "overlays": ("overlays", ".png"),
        }
        for key, (subfolder, suffix) in per_image.items():
            for image_id, value in data[key].items():
                array = value() if callable(value) else value
                file = folder / subfolder / _relative(image_id, suffix)
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_bytes(_encode(np.asarray(array), suffix, image_id))
        for key, name in TABLES.items():
            table = data[key]
            if not isinstance(table, pd.DataFrame):
                raise DatasetError(
                    f"inference output {key!r} must be a DataFrame, got {type(table)}"
                )
            table.to_csv(folder / name, index=False)
        manifest = {"version": version, **dict(data["manifest"])}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_jsonable) + "\n")

    def _exists(self) -> bool:
        try:
            return Path(str(self._get_load_path())).is_file()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {
            "path": str(self._filepath),
            "label_format": self._label_format,
            "version": self._version,
        }


def _relative(image_id: str, suffix: str) -> PurePosixPath:
    """``plate1/a1`` -> ``plate1/a1<suffix>``; an id that would leave the folder is refused."""
    relative = PurePosixPath(f"{image_id}{suffix}")
    if relative.is_absolute() or ".." in relative.parts or not image_id:
        raise DatasetError(f"image id {image_id!r} is not a relative path inside the output")
    return relative


def _encode(array: np.ndarray, suffix: str, image_id: str) -> bytes:
    if array.dtype not in (np.uint8, np.uint16):
        raise DatasetError(f"{image_id}: cannot write a {array.dtype} image, only uint8/uint16")
    if suffix == ".png":
        return encode_png(array)
    ok, buffer = cv2.imencode(suffix, array)
    if not ok:
        raise DatasetError(f"{image_id}: could not encode a {array.shape} {array.dtype} array")
    return buffer.tobytes()


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays, paths -> what JSON can hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
