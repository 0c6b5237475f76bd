"""Raw 2018 Data Science Bowl data, read straight from Kaggle's zip or its extracted folder.

Layout: ``<ImageId>/images/<ImageId>.png`` and ``<ImageId>/masks/<MaskId>.png`` (one binary
PNG per nucleus), optionally under one top folder, optionally with a run-length CSV
(``ImageId,EncodedPixels[,Height,Width,...]``) beside the folders. Loading the dataset only
indexes names; pixels are decoded per image by :meth:`DSBSource.read`, so the 29,000 mask
files of stage1_train are never all in memory and can be decoded by several processes.
"""

from __future__ import annotations

import functools
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from kedro.io.core import AbstractDataset, DatasetError

from nucleus_segmentation.datasets.errors import InputDatasetError
from nucleus_segmentation.imaging.codec import InvalidImageError, decode_image

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
_DRIVE = re.compile(r"^[A-Za-z]:")


class DSBSourceError(InputDatasetError):
    """The raw data as a whole cannot be used (missing, empty, unsafe archive)."""


@dataclass
class RawSample:
    """One image with its nucleus annotations, decoded but not yet merged.

    ``image`` is HxW or HxWxC (RGB/RGBA), uint8 or uint16 as stored. Exactly one of
    ``masks`` (one array per nucleus, with ``mask_files``) or ``rles`` (Kaggle RLE strings,
    with ``rle_names``) is filled, as ``label_source`` says.
    """

    image_id: str
    image_file: str
    image: np.ndarray
    label_source: str
    masks: list[np.ndarray] = field(default_factory=list)
    mask_files: list[str] = field(default_factory=list)
    rles: list[str] = field(default_factory=list)
    rle_names: list[str] = field(default_factory=list)


def _is_unsafe(name: str) -> bool:
    """True for an archive member that would land outside the extraction folder."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return name.startswith(("/", "\\")) or bool(_DRIVE.match(name)) or ".." in parts


@functools.lru_cache(maxsize=2)
def _open_zip(path: str, mtime_ns: int, size: int) -> zipfile.ZipFile:
    """One open archive per process and file version: reading the central directory of
    stage1_train.zip (30,000 members) takes 0.4 s, which every unpickled copy of a
    :class:`DSBSource` in a worker would otherwise pay again."""
    return zipfile.ZipFile(path)


class DSBSource:
    """An index of a DSB stage1 zip or folder, and per-image reading.

    Picklable (the open zip handle is not carried), so worker processes can read from it.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        labels_csv: str | os.PathLike | None = None,
        parameter: str = "raw_data",
    ):
        self.path = Path(os.path.normpath(path))
        if not self.path.exists():
            raise DSBSourceError(
                f"{self.path}: raw data path does not exist (a folder or zip in the DSB layout, "
                f"e.g. Kaggle's stage1_train.zip: kedro run --params {parameter}=<path>)"
            )
        if self.path.is_file() and not zipfile.is_zipfile(self.path):
            raise DSBSourceError(f"{self.path}: is neither a folder nor a zip archive")
        self.is_zip = self.path.is_file()
        self._zip: zipfile.ZipFile | None = None
        names, folders = self._list_names()
        self.images, self.masks, csvs = self._index(names, folders)
        self.rles: dict[str, list[str]] = {}
        self.rle_shapes: dict[str, tuple[int, int]] = {}
        for csv_name in csvs:
            self._add_rle_table(self._read_bytes(csv_name), self.describe(csv_name))
        if labels_csv is not None:
            labels_path = Path(labels_csv)
            if not labels_path.is_file():
                raise DSBSourceError(f"{labels_path}: run-length label CSV does not exist")
            self._add_rle_table(labels_path.read_bytes(), str(labels_path))
        if not self.images:
            kind = "zip archive" if self.is_zip else "folder"
            raise DSBSourceError(
                f"{self.path}: {kind} contains no DSB image folders "
                "(expected <ImageId>/images/<ImageId>.png and <ImageId>/masks/*.png)"
            )

    # -- indexing ---------------------------------------------------------------------------
    def _list_names(self) -> tuple[list[str], list[str]]:
        """Member files and folders, as POSIX paths relative to the source root."""
        if self.is_zip:
            with zipfile.ZipFile(self.path) as archive:
                infos = archive.infolist()
            unsafe = [info.filename for info in infos if _is_unsafe(info.filename)]
            if unsafe:
                raise DSBSourceError(
                    f"{self.path}: archive entry {unsafe[0]!r} would be written outside its "
                    f"folder (path traversal; {len(unsafe)} such entries); the archive is "
                    "refused and nothing was read or written"
                )
            files = [i.filename for i in infos if not i.is_dir()]
            folders = [i.filename.rstrip("/") for i in infos if i.is_dir()]
            return files, folders
        files, folders = [], []
        for root, dirnames, filenames in os.walk(self.path):
            relative = Path(root).relative_to(self.path).as_posix()
            prefix = "" if relative == "." else f"{relative}/"
            folders.extend(prefix + d for d in dirnames)
            files.extend(prefix + f for f in filenames)
        return files, folders

    @staticmethod
    def _index(
        files: list[str], folders: list[str]
    ) -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
        images: dict[str, list[str]] = {}
        masks: dict[str, list[str]] = {}
        csvs: list[str] = []
        for folder in folders:
            parts = folder.split("/")
            if len(parts) >= 2 and parts[-1] in ("images", "masks"):
                images.setdefault(parts[-2], [])
        for name in sorted(files):
            parts = name.split("/")
            if name.lower().endswith(".csv") and len(parts) <= 2:
                csvs.append(name)
                continue
            if len(parts) < 3 or not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            image_id, folder = parts[-3], parts[-2]
            if folder == "images":
                images.setdefault(image_id, []).append(name)
            elif folder == "masks":
                images.setdefault(image_id, [])
                masks.setdefault(image_id, []).append(name)
        return images, masks, csvs

    def _add_rle_table(self, data: bytes, name: str) -> None:
        import io

        try:
            table = pd.read_csv(io.BytesIO(data), dtype={"ImageId": str, "EncodedPixels": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DSBSourceError(f"{name}: not a readable CSV ({exc})") from exc
        if not {"ImageId", "EncodedPixels"} <= set(table.columns):
            return  # some other CSV beside the images: not a label table
        has_shape = {"Height", "Width"} <= set(table.columns)
        for row in table.itertuples(index=False):
            self.rles.setdefault(row.ImageId, []).append(row.EncodedPixels)
            if has_shape:
                self.rle_shapes[row.ImageId] = (int(row.Height), int(row.Width))

    # -- reading ----------------------------------------------------------------------------
    @property
    def image_ids(self) -> list[str]:
        """Every image id found, sorted."""
        return sorted(self.images)

    def describe(self, member: str) -> str:
        """A member's name as users should see it in messages."""
        member = member.rstrip("/")
        return f"{self.path}::{member}" if self.is_zip else str(self.path / member)

    def _read_bytes(self, member: str) -> bytes:
        if not self.is_zip:
            return (self.path / member).read_bytes()
        if self._zip is None:
            stat = self.path.stat()
            self._zip = _open_zip(str(self.path), stat.st_mtime_ns, stat.st_size)
        return self._zip.read(member)

    def read(self, image_id: str) -> RawSample:
        """Decode one image and its annotations.

        Raises:
            InvalidImageError: no image, several candidate images, an unreadable file, or no
                annotation at all; the message names the file or folder.
        """
        candidates = self.images.get(image_id)
        if candidates is None:
            raise InvalidImageError(image_id, "no such image id in the raw data")
        image_folder = self.describe(f"{image_id}/images/")
        if not candidates:
            raise InvalidImageError(image_folder, "image folder holds no PNG, TIFF or JPEG image")
        preferred = [c for c in candidates if PurePosixPath(c).stem == image_id]
        if len(preferred) != 1 and len(candidates) > 1:
            raise InvalidImageError(
                image_folder, f"holds {len(candidates)} images and none is named {image_id}.*"
            )
        image_member = (preferred or candidates)[0]
        image_file = self.describe(image_member)
        image = decode_image(self._read_bytes(image_member), image_file)
        mask_members = self.masks.get(image_id, [])
        if mask_members:
            mask_files = [self.describe(m) for m in mask_members]
            masks = [
                decode_image(self._read_bytes(m), f)
                for m, f in zip(mask_members, mask_files, strict=True)
            ]
            return RawSample(image_id, image_file, image, "masks", masks, mask_files)
        if image_id in self.rles:
            shape = self.rle_shapes.get(image_id)
            if shape is not None and shape != image.shape[:2]:
                raise InvalidImageError(
                    image_file,
                    f"run-length labels are for {shape[0]}x{shape[1]} but the image is "
                    f"{image.shape[0]}x{image.shape[1]}",
                )
            rles = self.rles[image_id]
            names = [f"RLE row {i + 1} of {image_id}" for i in range(len(rles))]
            return RawSample(image_id, image_file, image, "rle", rles=rles, rle_names=names)
        raise InvalidImageError(
            self.describe(f"{image_id}/masks/"), "no mask files and no run-length labels"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_zip"] = None
        return state


class DSBStage1Dataset(AbstractDataset[None, DSBSource]):
    """Read-only Kedro dataset for DSB stage1 data in a zip or a folder (see module doc).

    Example catalog entry (the path is a runtime parameter)::

        dsb_raw:
          type: nucleus_segmentation.datasets.DSBStage1Dataset
          path: ${runtime_params:raw_data, data/01_raw/dsb2018_sample}
    """

    def __init__(
        self,
        *,
        path: str,
        labels_csv: str | None = None,
        parameter: str = "raw_data",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = path
        self._labels_csv = labels_csv
        self._parameter = parameter  # the runtime parameter that sets the path (for errors)
        self.metadata = metadata

    def load(self) -> DSBSource:
        return DSBSource(self._path, self._labels_csv, self._parameter)

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._path}: raw DSB data is read-only")

    def _exists(self) -> bool:
        return Path(self._path).exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path, "labels_csv": self._labels_csv}
