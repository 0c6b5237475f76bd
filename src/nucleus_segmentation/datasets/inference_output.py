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


class InferenceOutputDataset(AbstractVersionedDataset[Any, Path]):
    """Saves the result of segmenting a folder of images; loads the latest result's folder.

    ``save`` takes a stream of per-image results (e.g.
    :class:`nucleus_segmentation.inference.FolderSegmentation`): an iterable whose items have
    ``image_id``, ``labels`` (HxW uint16), ``mask`` (HxW uint8 0/255), ``overlay`` (HxWx3
    uint8 RGB), ``nuclei`` (DataFrame) and ``rles`` (list of str), and which afterwards
    gives ``report()`` (DataFrame) and ``manifest()`` (JSON-able dict). Each image's files
    are written as it arrives, so the stream can be of any length::

        masks/<image id>.png       labels/<image id>.tif (or .png)    overlays/<image id>.png
        nuclei.csv (rows appended)  submission.csv (ImageId, EncodedPixels, appended)
        report.csv                  manifest.json (written last)

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

    def save(self, data: Any) -> None:
        if not all(hasattr(data, name) for name in ("__iter__", "report", "manifest")):
            raise DatasetError(
                "InferenceOutputDataset saves a stream of per-image results with report() "
                f"and manifest(), got {type(data).__name__}"
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

    def _write(self, folder: Path, data: Any, version: str) -> None:
        files = {
            "mask": ("masks", ".png"),
            "labels": ("labels", LABEL_SUFFIXES[self._label_format]),
            "overlay": ("overlays", ".png"),
        }
        with (
            open(folder / TABLES["nuclei"], "w", newline="") as nuclei,
            open(folder / TABLES["submission"], "w", newline="") as submission,
        ):
            for index, result in enumerate(data):
                for attribute, (subfolder, suffix) in files.items():
                    file = folder / subfolder / _relative(result.image_id, suffix)
                    file.parent.mkdir(parents=True, exist_ok=True)
                    array = np.asarray(getattr(result, attribute))
                    file.write_bytes(_encode(array, suffix, result.image_id))
                result.nuclei.to_csv(nuclei, header=index == 0, index=False)
                rows = {
                    "ImageId": [result.image_id] * len(result.rles),
                    "EncodedPixels": result.rles,
                }
                pd.DataFrame(rows).to_csv(submission, header=index == 0, index=False)
        data.report().to_csv(folder / TABLES["report"], index=False)
        manifest = {"version": version, **dict(data.manifest())}
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
