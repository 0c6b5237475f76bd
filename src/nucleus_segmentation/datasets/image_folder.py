"""``ImageFolderDataset``: a folder (and its subfolders) of a user's own images, read lazily.

Why not kedro-datasets' ``PartitionedDataset``: it takes one filename suffix, lists hidden
and non-image files as partitions, and turns a corrupt file into an error for the whole load;
here PNG, TIFF and JPEG are all images, anything else is ignored, and a bad file is the
caller's to report and skip (:class:`~nucleus_segmentation.imaging.codec.InvalidImageError`).
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io.core import AbstractDataset, DatasetError

from nucleus_segmentation.datasets.errors import InputDatasetError
from nucleus_segmentation.imaging.codec import read_image

logger = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
# A finished run of InferenceOutputDataset: never read back as input (an output folder
# inside the input folder would otherwise be segmented again on the next run).
_RESULT_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}\.\d{2}\.\d{2}\.\d{3}Z$")
_RESULT_MARKER = "manifest.json"


class ImageFolder(Mapping[str, Callable[[], np.ndarray]]):
    """An index of the images under ``path``: image id -> a function that decodes it.

    The id is the file's path relative to ``path`` without its suffix (``plate1/a1``), so
    files named alike in different subfolders stay apart; where two files differ only by
    suffix (``a1.png``, ``a1.tif``) both keep it. ``files`` maps each id to the relative
    file path. Nothing is decoded until a loader is called, so one image at a time is in
    memory.
    """

    def __init__(self, path: Path, files: Mapping[str, str]) -> None:
        self.path = path
        self.files = dict(files)

    def read(self, image_id: str) -> np.ndarray:
        """Decode one image: HxW or HxWxC (RGB/RGBA), uint8 or uint16 as stored.

        Raises:
            InvalidImageError: the file is empty, corrupt, not 8/16-bit, or cannot be read;
                its ``name`` is the file's path relative to the folder.
        """
        return read_image(self.path, self.files[image_id])

    def __getitem__(self, image_id: str) -> Callable[[], np.ndarray]:
        if image_id not in self.files:
            raise KeyError(image_id)
        return functools.partial(self.read, image_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.path)!r}, {len(self)} images)"


def index_images(path: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> dict[str, str]:
    """``{image id: relative POSIX path}`` of the image files under ``path``, sorted.

    Recurses into subfolders; skips hidden files and folders (``.name``), files whose suffix
    (any case) is not in ``suffixes``, and finished inference results (a
    ``<UTC timestamp>/manifest.json`` folder).
    """
    wanted = {suffix.lower() for suffix in suffixes}
    relative: list[PurePosixPath] = []
    for folder, subfolders, names in os.walk(path):
        kept = []
        for sub in sorted(subfolders):
            if sub.startswith("."):
                continue
            if _RESULT_FOLDER.match(sub) and (Path(folder) / sub / _RESULT_MARKER).is_file():
                logger.info("Skipping %s: an earlier inference result", Path(folder) / sub)
                continue
            kept.append(sub)
        subfolders[:] = kept
        base = PurePosixPath(Path(folder).relative_to(path).as_posix())
        for name in names:
            if not name.startswith(".") and Path(name).suffix.lower() in wanted:
                relative.append(base / name)
    relative.sort()
    stems = [str(file.with_suffix("")) for file in relative]
    clashes = {stem for stem, count in Counter(stems).items() if count > 1}
    return {
        (str(file) if stem in clashes else stem): str(file)
        for stem, file in zip(stems, relative, strict=True)
    }


class ImageFolderDataset(AbstractDataset[None, ImageFolder]):
    """Read-only: loads an :class:`ImageFolder` of the PNG, TIFF and JPEG files under a local
    folder, any bit depth (8/16) and channels (gray, RGB, RGBA). Other files are ignored.

    Example catalog entry::

        inference_images:
          type: nucleus_segmentation.datasets.ImageFolderDataset
          path: ${runtime_params:inference_input, data/01_raw/inference_examples}
    """

    def __init__(
        self,
        *,
        path: str,
        suffixes: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Args:
        path: the folder (local).
        suffixes: file name endings read as images, any case; default PNG, TIFF, JPEG.
        metadata: free-form (kedro-viz layer).
        """
        self._path = Path(os.path.normpath(path))
        self._suffixes = list(suffixes or IMAGE_SUFFIXES)
        self.metadata = metadata

    def load(self) -> ImageFolder:
        if not self._path.is_dir():
            problem = "is not a folder" if self._path.exists() else "does not exist"
            raise InputDatasetError(
                f"{self._path}: image folder {problem} (give one with "
                "kedro run --pipeline inference --params inference_input=<folder>)"
            )
        return ImageFolder(self._path, index_images(self._path, self._suffixes))

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._path}: ImageFolderDataset is read-only")

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "suffixes": self._suffixes}
