"""``NpzDataset``: a versioned, atomically written ``.npz`` of named arrays."""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from collections.abc import Mapping
from copy import deepcopy
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
import numpy as np
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_filepath_str,
    get_protocol_and_path,
)

from nucleus_segmentation.datasets.errors import InputDatasetError


class NpzDataset(AbstractVersionedDataset[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]):
    """Saves ``dict[str, np.ndarray]`` as one ``.npz`` (a zip of ``.npy`` members) and loads
    it back as a lazy read-only mapping: an array is decompressed only when it is indexed.

    Why not a kedro-datasets type: PartitionedDataset cannot be versioned, and pickles are
    neither portable nor safe to load. ``.npz`` is numpy's own format, readable without this
    project, and loading a member is a plain inflate plus memcpy (see docs/data.md).

    Local saves are atomic: the file is written next to its target and renamed into place,
    so an interrupted run never leaves a truncated version that later stages would load.

    Example catalog entry::

        preprocessed_images:
          type: nucleus_segmentation.datasets.NpzDataset
          filepath: data/04_feature/preprocessed_images.npz
          versioned: true
          save_args:
            compresslevel: 1
    """

    DEFAULT_SAVE_ARGS: dict[str, Any] = {"compresslevel": 1}

    def __init__(  # noqa: PLR0913
        self,
        *,
        filepath: str,
        save_args: dict[str, Any] | None = None,
        version: Version | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Args:
        filepath: where the ``.npz`` lives (local path or fsspec URL).
        save_args: ``compresslevel`` 0 (stored) .. 9 (smallest); 1 is ~5x faster than
            numpy's default 6 and within a few percent of its size on images and label maps.
        version: set by Kedro from ``versioned: true`` and ``--load-versions``.
        credentials, fs_args: passed to fsspec.
        metadata: free-form (kedro-viz layer).
        """
        protocol, path = get_protocol_and_path(filepath, version)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol, **(credentials or {}), **(fs_args or {}))
        self.metadata = metadata
        self._save_args = {**self.DEFAULT_SAVE_ARGS, **(save_args or {})}
        unknown = set(self._save_args) - {"compresslevel"}
        if unknown:
            raise InputDatasetError(f"NpzDataset({filepath}): unknown save_args {sorted(unknown)}")
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )

    def load(self) -> Mapping[str, np.ndarray]:
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        try:
            if self._protocol == "file":
                return np.load(load_path, allow_pickle=False)
            with self._fs.open(load_path, "rb") as stream:
                return np.load(io.BytesIO(stream.read()), allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise InputDatasetError(f"{load_path}: not a readable .npz file ({exc})") from exc

    def save(self, data: Mapping[str, np.ndarray]) -> None:
        if not isinstance(data, Mapping):
            raise DatasetError(f"NpzDataset saves a mapping of name -> array, got {type(data)}")
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        level = int(self._save_args["compresslevel"])
        if self._protocol == "file":
            target = Path(save_path)
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(
                prefix=f".{target.name}.", suffix=".partial", dir=target.parent
            )
            try:
                with os.fdopen(handle, "wb") as stream:
                    _write_npz(stream, data, level)
                os.replace(temporary, target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        else:
            with self._fs.open(save_path, "wb") as stream:
                _write_npz(stream, data, level)
        self._invalidate_cache()

    def _exists(self) -> bool:
        try:
            load_path = get_filepath_str(self._get_load_path(), self._protocol)
        except DatasetError:
            return False
        return self._fs.exists(load_path)

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._filepath,
            "protocol": self._protocol,
            "save_args": deepcopy(self._save_args),
            "version": self._version,
        }

    def _invalidate_cache(self) -> None:
        self._fs.invalidate_cache(get_filepath_str(self._filepath, self._protocol))


def _write_npz(stream: Any, data: Mapping[str, np.ndarray], level: int) -> None:
    """The ``np.savez_compressed`` layout, with a chosen deflate level."""
    compression = zipfile.ZIP_DEFLATED if level > 0 else zipfile.ZIP_STORED
    with zipfile.ZipFile(stream, "w", compression=compression, compresslevel=level or None) as zf:
        for name, array in data.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
