"""KerasModelDataset: versioned saves, provenance on load, optional models."""

import keras
import numpy as np
import pytest
from kedro.io.core import DatasetError, Version

from nucleus_segmentation.datasets import KerasModelDataset


def _model():
    inputs = keras.Input((4, 4, 1))
    return keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="softmax")(inputs))


def test_optional_model_loads_as_none_until_one_is_saved(tmp_path):
    path = str(tmp_path / "baseline.keras")
    optional = KerasModelDataset(filepath=path, version=Version(None, None), allow_missing=True)
    assert optional.load() is None
    required = KerasModelDataset(filepath=path, version=Version(None, None))
    with pytest.raises(DatasetError):
        required.load()
    model = _model()
    KerasModelDataset(filepath=path, version=Version(None, "2026-01-01T00.00.00.000Z")).save(model)
    loaded = optional.load()
    x = np.random.default_rng(0).random((1, 4, 4, 1)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.loaded_from.version == "2026-01-01T00.00.00.000Z"
    assert loaded.loaded_from.filepath.endswith("2026-01-01T00.00.00.000Z/baseline.keras")
