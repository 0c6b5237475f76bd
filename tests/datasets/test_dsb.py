import zipfile

import numpy as np
import pytest

from nucleus_segmentation.datasets.dsb import DSBSource, DSBSourceError, DSBStage1Dataset
from nucleus_segmentation.imaging.codec import InvalidImageError
from tests.conftest import disk, good_sample, png_bytes, write_sample, zip_folder


def test_folder_and_zip_index_the_same_images(dsb_folder, tmp_path):
    archive = zip_folder(dsb_folder, tmp_path / "stage1_train.zip")
    nested = zip_folder(dsb_folder, tmp_path / "nested.zip", prefix="stage1_train/")
    ids = ["fluo0", "fluo1", "fluo2", "stained0"]
    for path in (dsb_folder, archive, nested):
        source = DSBSource(path)
        assert source.image_ids == ids
        raw = source.read("fluo1")
        assert raw.image.shape == (64, 80, 4) and raw.image.dtype == np.uint8
        assert len(raw.masks) == 2 and raw.label_source == "masks"


def test_dataset_loads_source_and_is_read_only(dsb_folder):
    dataset = DSBStage1Dataset(path=str(dsb_folder))
    assert dataset.load().image_ids[0] == "fluo0"
    with pytest.raises(Exception, match="read-only"):
        dataset.save({"x": 1})


def test_missing_path_is_named(tmp_path):
    with pytest.raises(DSBSourceError, match=r"nowhere.zip: raw data path does not exist"):
        DSBSource(tmp_path / "nowhere.zip")


def test_empty_zip_is_refused(tmp_path):
    path = tmp_path / "empty.zip"
    zipfile.ZipFile(path, "w").close()
    with pytest.raises(DSBSourceError, match=r"empty.zip: zip archive contains no DSB image"):
        DSBSource(path)


def test_file_that_is_not_a_zip_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(DSBSourceError, match="neither a folder nor a zip"):
        DSBSource(path)


def test_path_traversal_entry_refuses_the_archive_and_writes_nothing(dsb_folder, tmp_path):
    path = zip_folder(dsb_folder, tmp_path / "evil.zip")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("../../escaped.png", b"x")
    before = sorted(p for p in tmp_path.parent.rglob("*"))
    with pytest.raises(DSBSourceError, match=r"evil.zip: archive entry '../../escaped.png' would"):
        DSBSource(path)
    assert sorted(p for p in tmp_path.parent.rglob("*")) == before


@pytest.mark.parametrize(
    "image",
    [
        np.dstack([np.full((6, 7), v, np.uint8) for v in (10, 20, 30, 255)]),  # RGBA
        np.dstack([np.full((6, 7), v, np.uint8) for v in (10, 20, 30)]),  # RGB
        np.full((6, 7), 40, np.uint8),  # gray 8-bit
        np.full((6, 7), 4000, np.uint16),  # gray 16-bit
    ],
    ids=["rgba", "rgb", "gray8", "gray16"],
)
def test_reads_every_png_flavour_in_rgb_order(tmp_path, image):
    write_sample(tmp_path, "a", image, {"m": disk((6, 7), (3, 3), 1)})
    raw = DSBSource(tmp_path).read("a")
    assert raw.image.dtype == image.dtype
    np.testing.assert_array_equal(raw.image, image)


def test_bad_images_raise_with_the_file_named(tmp_path):
    shape = (20, 20)
    write_sample(tmp_path, "noimage", None, {"m": disk(shape, (5, 5), 2)})
    write_sample(tmp_path, "corrupt", b"\x89PNG not really", {"m": disk(shape, (5, 5), 2)})
    write_sample(tmp_path, "zerobytes", b"", {"m": disk(shape, (5, 5), 2)})
    write_sample(tmp_path, "nomasks", png_bytes(np.zeros(shape, np.uint8)), {})
    source = DSBSource(tmp_path)
    cases = {
        "noimage": r"noimage/images: image folder holds no PNG",
        "corrupt": r"corrupt/images/corrupt.png: not a readable image",
        "zerobytes": r"zerobytes/images/zerobytes.png: file is empty \(0 bytes\)",
        "nomasks": r"nomasks/masks: no mask files and no run-length labels",
    }
    for image_id, message in cases.items():
        with pytest.raises(InvalidImageError, match=message):
            source.read(image_id)


def test_labels_can_arrive_as_rle_csv(tmp_path):
    root = tmp_path / "data"
    image = np.zeros((4, 3), np.uint8)
    write_sample(root, "r1", image, {})
    (root / "stage1_train_labels.csv").write_text("ImageId,EncodedPixels\nr1,1 2\nr1,6 2\n")
    raw = DSBSource(root).read("r1")
    assert raw.label_source == "rle" and raw.rles == ["1 2", "6 2"]


def test_rle_shape_mismatch_is_reported(tmp_path):
    root = tmp_path / "data"
    write_sample(root, "r1", np.zeros((4, 3), np.uint8), {})
    (root / "stage1_solution.csv").write_text(
        "ImageId,EncodedPixels,Height,Width,Usage\nr1,1 2,5,5,Public\n"
    )
    with pytest.raises(
        InvalidImageError, match="run-length labels are for 5x5 but the image is 4x3"
    ):
        DSBSource(root).read("r1")


def test_source_is_picklable_after_reading_a_zip(dsb_folder, tmp_path):
    import pickle

    source = DSBSource(zip_folder(dsb_folder, tmp_path / "a.zip"))
    source.read("fluo0")
    clone = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(clone.read("fluo0").image, source.read("fluo0").image)
    good_sample(tmp_path / "more", "x")  # unrelated folder: the clone is unaffected
    assert clone.image_ids == source.image_ids
    # the copies a worker unpickles share one open archive (its directory read once)
    again = pickle.loads(pickle.dumps(source))
    again.read("fluo1")
    assert again._zip is clone._zip is not None


def test_a_rewritten_zip_is_reopened_not_served_from_the_cache(dsb_folder, tmp_path):
    path = zip_folder(dsb_folder, tmp_path / "a.zip")
    first = DSBSource(path)
    first.read("fluo0")
    with zipfile.ZipFile(path, "a") as archive:  # same path, new content
        archive.writestr("extra/readme.txt", b"new")
    second = DSBSource(path)
    second.read("fluo0")
    assert second._zip is not first._zip
    assert "extra/readme.txt" in second._zip.namelist()


def test_a_missing_path_names_the_parameter_that_sets_it(tmp_path):
    with pytest.raises(DSBSourceError, match=r"--params calibration_input=<path>"):
        DSBStage1Dataset(path=str(tmp_path / "nowhere"), parameter="calibration_input").load()
