"""One inference run = one new timestamped folder, written completely or not at all."""

import json
import time

import cv2
import numpy as np
import pandas as pd
import pytest
from kedro.io.core import DatasetError, Version

from nucleus_segmentation.datasets.inference_output import InferenceOutputDataset

STAMP = "2026-01-31T12.00.00.000Z"


def _result(calls=None):
    labels = np.zeros((6, 8), np.uint16)
    labels[1:3, 2:5] = 1
    labels[4:6, 0:2] = 300

    def overlay():
        if calls is not None:
            calls.append("overlay")
        return np.zeros((6, 8, 3), np.uint8)

    return {
        "masks": {"sub/a": (labels > 0).astype(np.uint8) * 255},
        "labels": {"sub/a": labels},
        "overlays": {"sub/a": overlay},
        "nuclei": pd.DataFrame({"image": ["sub/a"], "nucleus_id": [1]}),
        "submission": pd.DataFrame({"ImageId": ["sub/a"], "EncodedPixels": ["1 2"]}),
        "report": pd.DataFrame(columns=["file", "problem"]),
        "manifest": {"model": {"version": "v1"}, "size": np.int64(3)},
    }


def test_a_run_is_written_in_its_timestamped_folder(tmp_path):
    calls = []
    dataset = InferenceOutputDataset(path=str(tmp_path / "out"), version=Version(None, STAMP))
    dataset.save(_result(calls))
    folder = tmp_path / "out" / STAMP
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == [
        "labels/sub/a.tif",
        "manifest.json",
        "masks/sub/a.png",
        "nuclei.csv",
        "overlays/sub/a.png",
        "report.csv",
        "submission.csv",
    ]
    assert calls == ["overlay"]  # lazy values are called while writing
    labels = cv2.imread(str(folder / "labels/sub/a.tif"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16 and labels.max() == 300
    np.testing.assert_array_equal(labels, _result()["labels"]["sub/a"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest == {"version": STAMP, "model": {"version": "v1"}, "size": 3}
    assert pd.read_csv(folder / "report.csv").columns.tolist() == ["file", "problem"]
    assert dataset.load() == folder
    assert [p.name for p in (tmp_path / "out").iterdir()] == [STAMP]  # no temporary left


def test_an_existing_folder_is_never_written_into(tmp_path):
    InferenceOutputDataset(path=str(tmp_path), version=Version(None, STAMP)).save(_result())
    manifest = (tmp_path / STAMP / "manifest.json").read_bytes()
    again = InferenceOutputDataset(path=str(tmp_path), version=Version(None, STAMP))
    with pytest.raises(DatasetError, match=f"{STAMP} already exists: .* never overwritten"):
        again.save(_result())
    assert (tmp_path / STAMP / "manifest.json").read_bytes() == manifest
    # Without a pinned version every save gets a new timestamp; earlier runs stay as they are.
    fresh = InferenceOutputDataset(path=str(tmp_path))
    fresh.save(_result())
    time.sleep(0.002)  # timestamps are in milliseconds
    fresh.save(_result())
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 3 and folders[0] == STAMP
    assert (tmp_path / STAMP / "manifest.json").read_bytes() == manifest
    assert fresh.load() == tmp_path / folders[-1]


def test_a_failure_while_writing_leaves_no_folder(tmp_path):
    result = _result()

    def failing():
        raise RuntimeError("disk on fire")

    result["overlays"] = {"sub/a": failing}
    dataset = InferenceOutputDataset(path=str(tmp_path), version=Version(None, STAMP))
    with pytest.raises(DatasetError, match="disk on fire"):
        dataset.save(result)
    assert list(tmp_path.iterdir()) == []
    assert not dataset.exists()


def test_png_labels_and_bad_input_are_handled(tmp_path):
    dataset = InferenceOutputDataset(path=str(tmp_path), label_format="png")
    dataset.save(_result())
    written = next(tmp_path.glob("*/labels/sub/a.png"))
    assert cv2.imread(str(written), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    with pytest.raises(DatasetError, match="label_format"):
        InferenceOutputDataset(path=str(tmp_path), label_format="jpeg")
    with pytest.raises(DatasetError, match="saves a mapping of"):
        InferenceOutputDataset(path=str(tmp_path)).save({"masks": {}})
    escaping = _result()
    escaping["masks"] = {"../../evil": escaping["masks"]["sub/a"]}
    with pytest.raises(DatasetError, match="not a relative path"):
        InferenceOutputDataset(path=str(tmp_path / "other")).save(escaping)
    assert not (tmp_path.parent / "evil.png").exists()
