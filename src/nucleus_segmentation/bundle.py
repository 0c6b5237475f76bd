"""Sample bundles: the in-memory form of every image set passed between stages.

A bundle is a flat ``dict[str, np.ndarray]`` with keys ``"<sample_id>/<field>"``
(fields ``image``, ``labels``, ``mask``), stored as one ``.npz`` by
:class:`nucleus_segmentation.datasets.NpzDataset`. Images of different sizes fit in one
bundle, a loaded bundle reads arrays only when asked, and insertion order is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np


def pack(samples: Iterable[tuple[str, Mapping[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """[(sample_id, {field: array})] -> bundle, in the given order."""
    bundle: dict[str, np.ndarray] = {}
    for sample_id, fields in samples:
        if "/" in sample_id:
            raise ValueError(f"sample id {sample_id!r} must not contain '/'")
        for field, array in fields.items():
            bundle[f"{sample_id}/{field}"] = array
    return bundle


def field(bundle: Mapping[str, np.ndarray], sample_id: str, name: str) -> np.ndarray:
    """One field (``image``, ``labels`` or ``mask``) of one sample.

    Raises:
        KeyError: naming the sample and field when the bundle has no such array.
    """
    try:
        return bundle[f"{sample_id}/{name}"]
    except KeyError:
        raise KeyError(f"bundle has no {name!r} for sample {sample_id!r}") from None


def sample_ids(bundle: Mapping[str, np.ndarray]) -> list[str]:
    """Ids in bundle order, each once."""
    return list(dict.fromkeys(key.rsplit("/", 1)[0] for key in bundle))


def get_sample(bundle: Mapping[str, np.ndarray], sample_id: str) -> dict[str, np.ndarray]:
    """{field: array} of one sample."""
    prefix = f"{sample_id}/"
    return {key[len(prefix) :]: bundle[key] for key in bundle if key.startswith(prefix)}
