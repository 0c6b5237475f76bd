"""A folder of one's own images: what is read, what is ignored, how bad files surface."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from kedro.io.core import DatasetError

from nucleus_segmentation.datasets.image_folder import ImageFolderDataset
from nucleus_segmentation.imaging.codec import InvalidImageError
from tests.conftest import png_bytes


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "plate1").mkdir(parents=True)
    (root / "plate2" / ".cache").mkdir(parents=True)
    gray16 = np.arange(24, dtype=np.uint16).reshape(4, 6) * 2000
    assert cv2.imwrite(str(root / "cells16.tif"), gray16)
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    (root / "plate1" / "a1.png").write_bytes(png_bytes(rgba))
    (root / "plate2" / "a1.PNG").write_bytes(png_bytes(np.full((3, 3), 9, np.uint8)))
    (root / "plate2" / ".cache" / "a1.png").write_bytes(png_bytes(np.zeros((3, 3), np.uint8)))
    (root / "twin.png").write_bytes(png_bytes(np.zeros((2, 2), np.uint8)))
    (root / "twin.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((8, 8), np.uint8))[1].tobytes())
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not the rest of a PNG")
    (root / "empty.tif").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    (root / "table.csv").write_text("a,b\n")
    (root / ".hidden.png").write_bytes(png_bytes(np.zeros((2, 2), np.uint8)))
    # An earlier inference result written inside the input folder is not input.
    result = root / "out" / "2026-01-31T12.00.00.000Z"
    (result / "masks").mkdir(parents=True)
    (result / "masks" / "cells16.png").write_bytes(png_bytes(np.zeros((2, 2), np.uint8)))
    (result / "manifest.json").write_text("{}")
    return root


def test_images_are_indexed_by_relative_path_and_other_files_ignored(folder):
    images = ImageFolderDataset(path=str(folder)).load()
    assert images.path == folder
    assert images.files == {
        "broken": "broken.png",
        "cells16": "cells16.tif",
        "empty": "empty.tif",
        "plate1/a1": "plate1/a1.png",
        "plate2/a1": "plate2/a1.PNG",
        "twin.jpg": "twin.jpg",  # two files differing only by suffix keep it
        "twin.png": "twin.png",
    }
    assert list(images) == sorted(images.files) and len(images) == 7


def test_images_decode_lazily_as_stored(folder):
    images = ImageFolderDataset(path=str(folder)).load()
    gray16 = images["cells16"]()
    assert gray16.dtype == np.uint16 and gray16.shape == (4, 6) and gray16.max() == 46000
    rgba = images.read("plate1/a1")
    assert rgba.shape == (5, 7, 4) and (rgba[0, 0] == (200, 0, 0, 255)).all()
    assert images.read("twin.jpg").shape == (8, 8)


@pytest.mark.parametrize(
    ("image_id", "problem"),
    [("broken", "not a readable image"), ("empty", "file is empty")],
)
def test_bad_files_raise_with_their_name_when_read(folder, image_id, problem):
    images = ImageFolderDataset(path=str(folder)).load()
    with pytest.raises(InvalidImageError, match=problem) as caught:
        images[image_id]()
    assert caught.value.name == images.files[image_id]


def test_a_missing_folder_or_a_file_is_a_clear_error(tmp_path, folder):
    with pytest.raises(DatasetError, match="nowhere: image folder does not exist"):
        ImageFolderDataset(path=str(tmp_path / "nowhere")).load()
    with pytest.raises(DatasetError, match="image folder is not a folder"):
        ImageFolderDataset(path=str(folder / "notes.txt")).load()
    assert ImageFolderDataset(path=str(folder)).exists()
    with pytest.raises(DatasetError, match="read-only"):
        ImageFolderDataset(path=str(folder)).save(object())
