"""Segmenting a folder of a user's own images: one image at a time, streamed.

:class:`FolderSegmentation` is lazy. Iterating it decodes, segments (with
:func:`nucleus_segmentation.segment.segment_image`, the path evaluation scores), outlines,
measures and run-length encodes each image, where :mod:`nucleus_segmentation.parallel` runs
per-image work (this process, local worker processes, or a Dask cluster), and yields one
:class:`SegmentedImage` per readable image in the folder's order; whoever consumes it (the
``InferenceOutputDataset``) writes each result as it arrives, so a folder of any size is
segmented in flat memory. Unreadable files are collected for the report.

Nothing here imports Kedro; workers that are not this process load the model from its
``.keras`` file once per process (:class:`ModelFile`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nucleus_segmentation.errors import DataProblem
from nucleus_segmentation.imaging.codec import InvalidImageError, read_image
from nucleus_segmentation.imaging.measure import NUCLEUS_COLUMNS, measure_nuclei
from nucleus_segmentation.imaging.overlay import draw_contours, mask_image
from nucleus_segmentation.imaging.rle import labels_to_rles
from nucleus_segmentation.model.folding import for_prediction
from nucleus_segmentation.parallel import parallel_map
from nucleus_segmentation.segment import SegmentationSettings, segment_image_scaled

logger = logging.getLogger(__name__)
REPORT_COLUMNS = ["file", "problem"]
NUCLEI_TABLE_COLUMNS = ["image", *NUCLEUS_COLUMNS]


@dataclass(frozen=True)
class SegmentedImage:
    """One image's result, on its own pixel grid.

    labels: HxW uint16 instance map (0 background); overlay: HxWx3 uint8 RGB, the image with
    the nucleus contours; nuclei: one row per nucleus (``NUCLEI_TABLE_COLUMNS``); rles: the
    Kaggle run-length encoding of each nucleus (``[""]`` when there is none); factor: the
    scale factor it was predicted at (``None`` for a fixed size), other than
    ``segmentation.scale.factor`` where its nuclei were outside ``scale.nucleus_area``.
    """

    image_id: str
    file: str
    labels: np.ndarray
    overlay: np.ndarray
    nuclei: pd.DataFrame
    rles: list[str]
    seconds: float
    factor: float | None = None

    @property
    def mask(self) -> np.ndarray:
        """HxW uint8 0/255: ``labels > 0``."""
        return mask_image(self.labels)


@dataclass(frozen=True)
class Skipped:
    file: str
    problem: str


@dataclass(frozen=True)
class ModelFile:
    """A ``.keras`` file for workers outside this process to load (once per process), the
    threads each may use (so N workers on N cores do not each claim all of them) and the
    precision it computes in (``segmentation.precision``)."""

    path: str
    threads: int | None = None
    precision: str = "auto"


@functools.lru_cache(maxsize=2)
def _load_model(model: ModelFile):
    import keras

    import nucleus_segmentation.model  # noqa: F401  (registers the custom layers)

    if model.threads and keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # the runtime's thread pools, set before its first op

        with contextlib.suppress(RuntimeError):  # already running: keep its pools
            tf.config.threading.set_intra_op_parallelism_threads(model.threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
    loaded = keras.saving.load_model(model.path, safe_mode=True)
    return for_prediction(loaded, model.precision)


@dataclass(frozen=True)
class ImageWork:
    """Everything one image's work needs besides the image: picklable when the model is a
    :class:`ModelFile` (workers elsewhere), any model object when it runs in this process."""

    model: Any
    preprocessing: Mapping[str, Any]
    settings: SegmentationSettings
    separation: Mapping[str, Any]
    colour: Sequence[int]
    mode: str

    def __call__(self, item: tuple[str, str, str]) -> SegmentedImage | Skipped:
        image_id, folder, name = item
        try:
            image = read_image(Path(folder), name)
        except InvalidImageError as exc:
            return Skipped(exc.name, exc.problem)
        model = _load_model(self.model) if isinstance(self.model, ModelFile) else self.model
        started = time.perf_counter()
        labels, factor = segment_image_scaled(
            model, image, self.preprocessing, self.settings, self.separation
        )
        nuclei = measure_nuclei(labels, image).assign(image=image_id)[NUCLEI_TABLE_COLUMNS]
        return SegmentedImage(
            image_id=image_id,
            file=name,
            labels=labels,
            overlay=draw_contours(image, labels, self.colour, self.mode),
            nuclei=nuclei,
            rles=labels_to_rles(labels) or [""],
            seconds=time.perf_counter() - started,
            factor=factor,
        )


@dataclass
class FolderSegmentation:
    """The lazy result of segmenting ``files`` (image id -> path relative to ``folder``).

    Iterate once to segment; afterwards :meth:`report` lists the skipped files and
    :meth:`manifest` records what produced the result (``about``: input, model, settings)
    and every image segmented.

    Raises (while iterating):
        DataProblem: not a single image of the folder could be read.
    """

    folder: Path
    files: Mapping[str, str]
    work: ImageWork
    n_workers: int | str
    about: Mapping[str, Any]
    skipped: list[Skipped] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)

    def __iter__(self) -> Iterator[SegmentedImage]:
        self.skipped, self.images = [], []
        items = ((image_id, str(self.folder), name) for image_id, name in self.files.items())
        results = parallel_map(
            self.work,
            items,
            self.n_workers,
            chunksize=1,
            progress="segmenting images",
            total=len(self.files),
        )
        for result in results:
            if isinstance(result, Skipped):
                logger.warning("Skipping %s: %s", result.file, result.problem)
                self.skipped.append(result)
                continue
            height, width = result.labels.shape
            nuclei = int(result.labels.max())
            own = self.work.settings.scale.factor
            rescaled = result.factor is not None and result.factor != own
            logger.info(
                "Segmented %s (%dx%d): %d nuclei in %.2f s%s",
                result.file,
                height,
                width,
                nuclei,
                result.seconds,
                f" (predicted at scale x{result.factor:.2f}: nuclei outside "
                "segmentation.scale.nucleus_area)"
                if rescaled
                else "",
            )
            self.images.append(
                {
                    "id": result.image_id,
                    "file": result.file,
                    "height": height,
                    "width": width,
                    "nuclei": nuclei,
                    "scale_factor": result.factor,
                }
            )
            yield result
        if not self.images:
            found = (
                f"{len(self.skipped)} image file(s), none readable"
                if self.skipped
                else "no image file"
            )
            raise DataProblem(
                f"{self.folder}: no usable image ({found}; PNG, TIFF or JPEG, 8- or 16-bit)"
                + "".join(f"\n  {s.file}: {s.problem}" for s in self.skipped[:10])
            )

    def report(self) -> pd.DataFrame:
        """The files skipped and why (columns ``file``, ``problem``)."""
        return pd.DataFrame([vars(s) for s in self.skipped], columns=REPORT_COLUMNS)

    def manifest(self) -> dict[str, Any]:
        """``about`` plus every image segmented (id, file, size, nuclei) and every skip."""
        return {
            **dict(self.about),
            "images": list(self.images),
            "skipped": [vars(s) for s in self.skipped],
        }
