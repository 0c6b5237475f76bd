"""One inference run = one new timestamped folder, written image by image as the results
stream in, completely or not at all."""

import json
import time
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
import pytest
from kedro.io.core import DatasetError, Version

from nucleus_segmentation.datasets.inference_output import InferenceOutputDataset

STAMP = "2026-01-31T12.00.00.000Z"


def _labels():
    labels = np.zeros((6, 8), np.uint16)
    labels[1:3, 2:5] = 1
    labels[4:6, 0:2] = 300
    return labels


@dataclass
class Result:
    image_id: str
    labels: np.ndarray
    overlay: np.ndarray
    nuclei: pd.DataFrame
    rles: list

    @property
    def mask(self):
        return (self.labels > 0).astype(np.uint8) * 255


class Stream:
    """What inference hands the dataset: results one at a time, then report and manifest.
    ``seen`` records, as each result is produced, which label files exist already."""

    def __init__(self, ids=("sub/a", "b"), fail_after=None, folder=None):
        self.ids, self.fail_after, self.folder, self.seen = list(ids), fail_after, folder, []

    def __iter__(self):
        for index, image_id in enumerate(self.ids):
            if self.folder is not None:
                self.seen.append(sorted(p.name for p in self.folder.rglob("*.tif")))
            if self.fail_after == index:
                raise RuntimeError("disk on fire")
            yield Result(
                image_id,
                _labels(),
                np.zeros((6, 8, 3), np.uint8),
                pd.DataFrame({"image": [image_id] * 2, "nucleus_id": [1, 300]}),
                ["10 2 16 2", "5 2"],
            )

    def report(self):
        return pd.DataFrame([{"file": "bad.png", "problem": "file is empty (0 bytes)"}])

    def manifest(self):
        return {"model": {"version": "v1"}, "size": np.int64(3)}


def test_a_run_is_written_in_its_timestamped_folder_image_by_image(tmp_path):
    dataset = InferenceOutputDataset(path=str(tmp_path / "out"), version=Version(None, STAMP))
    stream = Stream(folder=tmp_path / "out")
    dataset.save(stream)
    folder = tmp_path / "out" / STAMP
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == [
        "labels/b.tif",
        "labels/sub/a.tif",
        "manifest.json",
        "masks/b.png",
        "masks/sub/a.png",
        "nuclei.csv",
        "overlays/b.png",
        "overlays/sub/a.png",
        "report.csv",
        "submission.csv",
    ]
    assert stream.seen == [[], ["a.tif"]]  # the first image was on disk before the second came
    labels = cv2.imread(str(folder / "labels/sub/a.tif"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16 and labels.max() == 300
    np.testing.assert_array_equal(labels, _labels())
    mask = cv2.imread(str(folder / "masks/b.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(mask, (_labels() > 0) * 255)
    nuclei = pd.read_csv(folder / "nuclei.csv")
    assert nuclei.to_dict("list") == {
        "image": ["sub/a"] * 2 + ["b"] * 2,
        "nucleus_id": [1, 300] * 2,
    }
    submission = pd.read_csv(folder / "submission.csv")
    assert submission.columns.tolist() == ["ImageId", "EncodedPixels"] and len(submission) == 4
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest == {"version": STAMP, "model": {"version": "v1"}, "size": 3}
    assert pd.read_csv(folder / "report.csv")["file"].tolist() == ["bad.png"]
    assert dataset.load() == folder
    assert [p.name for p in (tmp_path / "out").iterdir()] == [STAMP]  # no temporary left


def test_an_existing_folder_is_never_written_into(tmp_path):
    InferenceOutputDataset(path=str(tmp_path), version=Version(None, STAMP)).save(Stream())
    manifest = (tmp_path / STAMP / "manifest.json").read_bytes()
    again = InferenceOutputDataset(path=str(tmp_path), version=Version(None, STAMP))
    with pytest.raises(DatasetError, match=f"{STAMP} already exists: .* never overwritten"):
        again.save(Stream())
    assert (tmp_path / STAMP / "manifest.json").read_bytes() == manifest
    # Without a pinned version every save gets a new timestamp; earlier runs stay as they are.
    fresh = InferenceOutputDataset(path=str(tmp_path))
    fresh.save(Stream())
    time.sleep(0.002)  # timestamps are in milliseconds
    fresh.save(Stream())
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 3 and folders[0] == STAMP
    assert (tmp_path / STAMP / "manifest.json").read_bytes() == manifest
    assert fresh.load() == tmp_path / folders[-1]


def test_a_failure_midway_leaves_no_folder(tmp_path):
    dataset = InferenceOutputDataset(path=str(tmp_path), version=Version(None, STAMP))
    with pytest.raises(DatasetError, match="disk on fire"):
        dataset.save(Stream(fail_after=1))  # one image written already
    assert list(tmp_path.iterdir()) == []
    assert not dataset.exists()


def test_png_labels_and_bad_input_are_handled(tmp_path):
    dataset = InferenceOutputDataset(path=str(tmp_path), label_format="png")
    dataset.save(Stream())
    written = next(tmp_path.glob("*/labels/sub/a.png"))
    assert cv2.imread(str(written), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    with pytest.raises(DatasetError, match="label_format"):
        InferenceOutputDataset(path=str(tmp_path), label_format="jpeg")
    with pytest.raises(DatasetError, match="saves a stream of per-image results"):
        InferenceOutputDataset(path=str(tmp_path)).save({"masks": {}})
    with pytest.raises(DatasetError, match="not a relative path"):
        InferenceOutputDataset(path=str(tmp_path / "other")).save(Stream(ids=["../../evil"]))
    assert not (tmp_path.parent / "evil.png").exists()
