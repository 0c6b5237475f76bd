"""Sample bundles: the in-memory form of every image set passed between stages.

A bundle is a flat ``dict[str, np.ndarray]`` with keys ``"<sample_id>/<field>"``
(fields ``image``, ``labels``, ``mask``), stored as one ``.npz`` by
:class:`nucleus_segmentation.datasets.NpzDataset`. Images of different sizes fit in one
bundle, a loaded bundle reads arrays only when asked, and insertion order is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import numpy as np

FIELDS = ("image", "labels", "mask")


def pack(samples: Iterable[tuple[str, Mapping[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """[(sample_id, {field: array})] -> bundle, in the given order."""
    bundle: dict[str, np.ndarray] = {}
    for sample_id, fields in samples:
        if "/" in sample_id:
            raise ValueError(f"sample id {sample_id!r} must not contain '/'")
        for field, array in fields.items():
            bundle[f"{sample_id}/{field}"] = array
    return bundle


def sample_ids(bundle: Mapping[str, np.ndarray]) -> list[str]:
    """Ids in bundle order, each once."""
    return list(dict.fromkeys(key.rsplit("/", 1)[0] for key in bundle))


def get_sample(bundle: Mapping[str, np.ndarray], sample_id: str) -> dict[str, np.ndarray]:
    """{field: array} of one sample."""
    prefix = f"{sample_id}/"
    return {key[len(prefix) :]: bundle[key] for key in bundle if key.startswith(prefix)}


def iter_samples(bundle: Mapping[str, np.ndarray]) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """(sample_id, {field: array}) for every sample, in bundle order, reading one at a time."""
    fields_by_id: dict[str, list[str]] = {}
    for key in bundle:
        sample_id, field = key.rsplit("/", 1)
        fields_by_id.setdefault(sample_id, []).append(field)
    for sample_id, fields in fields_by_id.items():
        yield sample_id, {field: bundle[f"{sample_id}/{field}"] for field in fields}
