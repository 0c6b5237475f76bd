import numpy as np
import pytest
from kedro.io.core import DatasetError, Version

from nucleus_segmentation.datasets.npz import NpzDataset


def test_round_trip_keeps_arrays_dtypes_and_order(tmp_path):
    data = {
        "b/image": np.arange(12, dtype=np.uint8).reshape(3, 4),
        "a/labels": np.array([[0, 65535]], np.uint16),
        "ids": np.array(["x", "yy"]),
    }
    dataset = NpzDataset(filepath=str(tmp_path / "set.npz"))
    dataset.save(data)
    loaded = dataset.load()
    assert list(loaded.keys()) == list(data)
    for key, value in data.items():
        assert loaded[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded[key], value)


def test_versions_are_kept_and_latest_loads(tmp_path):
    path = str(tmp_path / "set.npz")
    NpzDataset(filepath=path, version=Version(None, "2026-01-01T00.00.00.000Z")).save(
        {"x": np.zeros(2)}
    )
    NpzDataset(filepath=path, version=Version(None, "2026-01-02T00.00.00.000Z")).save(
        {"x": np.ones(2)}
    )
    np.testing.assert_array_equal(
        NpzDataset(filepath=path, version=Version(None, None)).load()["x"], np.ones(2)
    )
    pinned = NpzDataset(filepath=path, version=Version("2026-01-01T00.00.00.000Z", None))
    np.testing.assert_array_equal(pinned.load()["x"], np.zeros(2))


def test_failed_save_leaves_no_file(tmp_path):
    dataset = NpzDataset(filepath=str(tmp_path / "set.npz"))
    with pytest.raises(DatasetError, match="Object arrays cannot be saved"):
        dataset.save({"good": np.zeros(3), "bad": np.array([object()], dtype=object)})
    assert list(tmp_path.iterdir()) == []


def test_unreadable_file_is_named(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="broken.npz: not a readable .npz file"):
        NpzDataset(filepath=str(path)).load()
