"""KerasModelDataset: versioned saves, provenance on load, optional models."""

import keras
import numpy as np
import pytest
from kedro.io.core import Version

from nucleus_segmentation.datasets import KerasModelDataset
from nucleus_segmentation.datasets.errors import InputDatasetError


def _model():
    inputs = keras.Input((4, 4, 1))
    return keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="softmax")(inputs))


def test_optional_model_loads_as_none_until_one_is_saved(tmp_path):
    path = str(tmp_path / "baseline.keras")
    optional = KerasModelDataset(filepath=path, version=Version(None, None), allow_missing=True)
    assert optional.load() is None
    required = KerasModelDataset(filepath=path, version=Version(None, None))
    with pytest.raises(InputDatasetError, match=r"baseline.keras: no saved model yet .*training"):
        required.load()
    model = _model()
    KerasModelDataset(filepath=path, version=Version(None, "2026-01-01T00.00.00.000Z")).save(model)
    loaded = optional.load()
    x = np.random.default_rng(0).random((1, 4, 4, 1)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.loaded_from.version == "2026-01-01T00.00.00.000Z"
    assert loaded.loaded_from.filepath.endswith("2026-01-01T00.00.00.000Z/baseline.keras")


def test_a_pinned_version_that_does_not_exist_is_named(tmp_path):
    path = str(tmp_path / "model.keras")
    saved = KerasModelDataset(filepath=path, version=Version(None, "2026-01-01T00.00.00.000Z"))
    saved.save(_model())
    pinned = KerasModelDataset(filepath=path, version=Version("2026-02-02T00.00.00.000Z", None))
    with pytest.raises(InputDatasetError, match="2026-02-02T00.00.00.000Z/model.keras: not a"):
        pinned.load()


def test_the_training_preprocessing_travels_inside_the_model_file(tmp_path):
    import zipfile

    path = str(tmp_path / "model.keras")
    model = _model()
    record = {"equalize.method": "percentile", "equalize.percentiles": [1.0, 99.8]}
    model.trained_preprocessing = record
    KerasModelDataset(filepath=path, version=Version(None, "2026-01-01T00.00.00.000Z")).save(model)
    loaded = KerasModelDataset(filepath=path, version=Version(None, None)).load()
    assert loaded.trained_preprocessing == record
    # A model without the record (saved before it existed) loads with None.
    KerasModelDataset(filepath=path, version=Version(None, "2026-01-02T00.00.00.000Z")).save(
        _model()
    )
    older = KerasModelDataset(filepath=path, version=Version("2026-01-02T00.00.00.000Z", None))
    assert older.load().trained_preprocessing is None
    # A damaged record is named, not a traceback from json.
    damaged = tmp_path / "damaged.keras"
    damaged.write_bytes(
        (tmp_path / "model.keras" / "2026-01-01T00.00.00.000Z" / "model.keras").read_bytes()
    )
    with zipfile.ZipFile(damaged, "a") as archive:
        archive.writestr("nucleus_segmentation.json", "{not json")
    with pytest.raises(InputDatasetError, match=r"damaged.keras: unreadable nucleus_segmentation"):
        KerasModelDataset(filepath=str(damaged)).load()
