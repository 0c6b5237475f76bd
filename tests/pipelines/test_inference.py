"""The inference pipeline on a folder of exactly known images, with a fake and a real model."""

import hashlib
import json
import logging
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.io.core import DatasetError, Version
from kedro.runner import SequentialRunner

from nucleus_segmentation.datasets import (
    ImageFolderDataset,
    InferenceOutputDataset,
    KerasModelDataset,
    ModelSource,
)
from nucleus_segmentation.imaging.rle import rles_to_labels
from nucleus_segmentation.model import UNetConfig, build_attention_unet
from nucleus_segmentation.model.precision import resolve_precision
from nucleus_segmentation.pipelines.inference.nodes import segment_images
from nucleus_segmentation.pipelines.inference.pipeline import create_pipeline
from nucleus_segmentation.settings import CONFIG_LOADER_ARGS
from tests.conftest import disk, fluorescence_image, png_bytes

# Keras' TensorFlow backend calls np.array(x, copy=False) on tensors (numpy 2 warns).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# The network sees the image itself: no inversion, equalization or smoothing to undo.
PREPROCESSING = {
    "invert": {"enabled": False, "brightness_threshold": 127.0},
    "equalize": {"enabled": False, "method": "clahe", "clip_limit": 2.0, "tile_grid": 8},
    "smooth": {"enabled": False, "kernel_size": 5, "sigma": 1.0},
}
SEGMENTATION = {
    "scale": {"mode": "native", "factor": 1.0},
    "tile_size": 512,
    "tile_overlap": 32,
    "batch_size": 2,
    "tta": {"scales": [1.0], "flips": ["none"]},
}
PARAMS = {"overlay": {"colour": [255, 255, 0], "mode": "inner"}, "n_workers": 1}
SEPARATION = {"threshold": 0.5, "method": "distance", "seed_depth": 1.0, "smoothing": 0.0}
SEPARATION["min_size"] = 1
STAMP = "2026-01-31T12.00.00.000Z"
SOURCE = ModelSource("data/06_models/attention_unet.keras/v1/attention_unet.keras", "v1", "ab12")

# Disks (centre, radius) of each test image; the 1000 x 700 one is predicted in 3 x 2 tiles
# and has disks across the tile boundaries (rows 339/340 and 660/661, column 349/350).
CELLS16 = [((20, 25), 8), ((55, 70), 10)]
BIG = [((100, 100), 12), ((340, 350), 15), ((660, 200), 9), ((900, 650), 20), ((500, 349), 11)]
SUB = [((30, 40), 9)]


class Echo:
    """A "model" whose nucleus probability is its input (0..1); records what it was given."""

    def __init__(self, loaded_from=None):
        self.shapes = []
        if loaded_from is not None:
            self.loaded_from = loaded_from

    def predict_on_batch(self, batch):
        self.shapes.append(batch.shape)
        return np.concatenate([1 - batch, batch], axis=-1)


def _disks(shape, disks):
    return np.any([disk(shape, centre, radius) > 0 for centre, radius in disks], axis=0)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "my images"
    (root / "sub").mkdir(parents=True)
    cells16 = np.where(_disks((80, 96), CELLS16), 40000, 1000).astype(np.uint16)
    assert cv2.imwrite(str(root / "cells16.tif"), cells16)
    (root / "rgba.png").write_bytes(png_bytes(fluorescence_image()))  # disks (20,20), (40,55)
    big = np.where(_disks((1000, 700), BIG), 220, 20).astype(np.uint8)
    (root / "big.png").write_bytes(png_bytes(big))
    sub = np.dstack([np.where(_disks((64, 80), SUB), 180, 5).astype(np.uint8)] * 3)
    (root / "sub" / "rgba.png").write_bytes(png_bytes(sub))
    (root / "blank.png").write_bytes(png_bytes(np.full((40, 40), 7, np.uint8)))
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00 truncated")
    (root / "empty.jpg").write_bytes(b"")
    (root / "readme.txt").write_text("not an image")
    return root


def _images(folder: Path):
    return ImageFolderDataset(path=str(folder)).load()


def _segment(images, model, segmentation=SEGMENTATION, params=PARAMS, separation=SEPARATION):
    """Run the node and consume its stream as the output dataset does: the results (in the
    folder's order), their label maps, the report and the manifest."""
    stream = segment_images(images, model, separation, PREPROCESSING, segmentation, params)
    results = list(stream)
    return results, {r.image_id: r.labels for r in results}, stream.report(), stream.manifest()


def test_every_readable_image_is_segmented_and_bad_files_are_reported(folder):
    model = Echo(SOURCE)
    _, labels, report, manifest = _segment(_images(folder), model)
    assert list(labels) == ["big", "blank", "cells16", "rgba", "sub/rgba"]
    expected = {
        "big": _disks((1000, 700), BIG),
        "blank": np.zeros((40, 40), bool),
        "cells16": _disks((80, 96), CELLS16),
        "rgba": _disks((64, 80), [((20, 20), 8), ((40, 55), 8)]),
        "sub/rgba": _disks((64, 80), SUB),
    }
    for image_id, truth in expected.items():
        assert labels[image_id].dtype == np.uint16
        np.testing.assert_array_equal(labels[image_id] > 0, truth, err_msg=image_id)
    assert [int(labels[k].max()) for k in expected] == [5, 0, 2, 2, 1]
    # Tiled (3 x 2 tiles of 512, two per call) yet one nucleus per disk across boundaries.
    assert model.shapes.count((2, 512, 512, 1)) == 3
    assert report.to_dict("records") == [
        {"file": "corrupt.png", "problem": "not a readable image (corrupt or unsupported format)"},
        {"file": "empty.jpg", "problem": "file is empty (0 bytes)"},
    ]
    assert manifest["model"] == {"file": SOURCE.filepath, "version": "v1", "sha256": "ab12"} | {
        "name": "Echo",
        "precision": resolve_precision("auto"),  # what this machine runs
        "classes": None,  # a test double: no output shape
    }
    assert manifest["input_folder"] == str(folder.resolve())
    assert manifest["parameters"]["preprocessing"] == PREPROCESSING
    assert manifest["parameters"]["instance_postprocessing"] == {**SEPARATION, "outline": None}
    assert manifest["parameters"]["segmentation"]["tile_size"] == 512
    assert manifest["parameters"]["segmentation"]["scale"]["mode"] == "native"
    assert manifest["images"][2] == {
        "id": "cells16",
        "file": "cells16.tif",
        "height": 80,
        "width": 96,
        "nuclei": 2,
        "scale_factor": 1.0,  # its nuclei are within segmentation.scale.nucleus_area
    }
    assert manifest["skipped"] == report.to_dict("records")
    json.dumps(manifest)  # plain JSON


def test_nuclei_table_overlay_and_submission_match_the_label_maps(folder):
    results, labels, _, _ = _segment(_images(folder), Echo())
    nuclei = pd.concat([r.nuclei for r in results], ignore_index=True)
    assert nuclei.columns.tolist()[:3] == ["image", "nucleus_id", "area_px"]
    cells = nuclei[nuclei["image"] == "cells16"].sort_values("area_px")
    assert cells["area_px"].tolist() == [int(disk((80, 96), c, r).sum()) for c, r in CELLS16]
    assert cells[["centroid_y", "centroid_x"]].values.tolist() == [[20, 25], [55, 70]]
    assert cells[["bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x"]].values.tolist() == [
        [12, 17, 29, 34],
        [45, 60, 66, 81],
    ]
    assert (cells["mean_intensity"] == 40000.0).all()  # 16-bit units
    assert nuclei.groupby("image").size().to_dict() == {"big": 5, "cells16": 2, "rgba": 2} | {
        "sub/rgba": 1
    }
    by_id = {r.image_id: r for r in results}
    assert by_id["blank"].rles == [""]
    for image_id, label_map in labels.items():
        rles = [rle for rle in by_id[image_id].rles if rle]
        np.testing.assert_array_equal(rles_to_labels(rles, label_map.shape), label_map)
        np.testing.assert_array_equal(by_id[image_id].mask, (label_map > 0) * 255)
    overlay = by_id["sub/rgba"].overlay
    assert overlay.shape == (64, 80, 3) and (overlay == (255, 255, 0)).all(axis=2).sum() > 20


def test_scale_rescales_the_network_input_and_not_the_labels(folder):
    model = Echo()
    segmentation = {**SEGMENTATION, "scale": {"mode": "native", "factor": 2.0}}
    only = _images(folder)
    only.files = {"cells16": only.files["cells16"]}
    _, labels, _, manifest = _segment(only, model, segmentation)
    assert model.shapes == [(1, 160, 192, 1)]
    assert labels["cells16"].shape == (80, 96) and labels["cells16"].max() == 2
    np.testing.assert_array_equal(labels["cells16"] > 0, _disks((80, 96), CELLS16))
    assert manifest["parameters"]["segmentation"]["scale"]["factor"] == 2.0


def test_an_image_whose_nuclei_are_outside_the_band_is_rescaled_and_the_manifest_says_so(
    folder, caplog
):
    model = Echo()
    scale = {"mode": "native", "factor": 1.0, "nucleus_area": [None, 100], "target_area": 50}
    only = _images(folder)
    only.files = {"cells16": only.files["cells16"]}
    with caplog.at_level(logging.INFO, logger="nucleus_segmentation.inference"):
        _, labels, _, manifest = _segment(only, model, {**SEGMENTATION, "scale": scale})
    areas = [int((disk((80, 96), c, r) > 0).sum()) for c, r in CELLS16]  # ~200 and ~315 px
    factor = float(np.sqrt(50 / np.median(areas)))  # about 0.44
    assert manifest["images"][0]["scale_factor"] == pytest.approx(factor)
    assert model.shapes == [(1, 80, 96, 1), (1, round(80 * factor), round(96 * factor), 1)]
    assert labels["cells16"].shape == (80, 96) and labels["cells16"].max() == 2
    assert f"predicted at scale x{factor:.2f}" in caplog.text


def test_a_folder_without_usable_images_stops_naming_it(folder, tmp_path):
    for name in ("big.png", "blank.png", "cells16.tif", "rgba.png", "sub/rgba.png"):
        (folder / name).unlink()
    with pytest.raises(ValueError, match=r"my images: no usable image \(2 image file") as caught:
        _segment(_images(folder), Echo())
    assert "corrupt.png: not a readable image" in str(caught.value)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"texts: no usable image \(no image file"):
        _segment(_images(tmp_path / "texts"), Echo())


@pytest.mark.parametrize(
    ("segmentation", "params", "message"),
    [
        ({"tile_size": 8}, {}, "tile_size must be at least 16"),
        ({"tile_overlap": 512}, {}, "tile_overlap"),
        ({"scale": {"factor": 0}}, {}, "factor must be positive"),
        ({"tta": {"scales": [1.0], "flips": ["diagonal"]}}, {}, "tta.flips"),
        ({}, {"overlay": {"colour": [0, 0], "mode": "inner"}}, "three values"),
    ],
)
def test_bad_settings_stop_before_any_image_is_read(folder, segmentation, params, message):
    model = Echo()
    images = _images(folder)
    with pytest.raises(ValueError, match=message):
        segment_images(
            images,
            model,
            SEPARATION,
            PREPROCESSING,
            {**SEGMENTATION, **segmentation},
            {**PARAMS, **params},
        )
    with pytest.raises(ValueError, match="expected the keys"):
        segment_images(
            images, model, {**SEPARATION, "sigma": 1}, PREPROCESSING, SEGMENTATION, PARAMS
        )
    assert model.shapes == []


def test_a_separation_tuned_on_other_settings_is_named_in_a_warning(folder, caplog):
    from nucleus_segmentation.segment import SegmentationSettings, record_tuning

    tuned = SegmentationSettings.from_params({**SEGMENTATION, "scale": {"factor": 2.0}})
    plan = record_tuning(SEPARATION, tuned)
    with caplog.at_level(logging.WARNING):
        _, labels, _, manifest = _segment(_images(folder), Echo(), separation=plan)
    assert "instance_postprocessing was tuned on probabilities predicted with other" in caplog.text
    assert "scale.factor: tuned with 2.0, now 1.0" in caplog.text
    assert "tta." not in caplog.text
    # Still segmented, with the separation as tuned (the record is not a setting).
    _, plain, _, _ = _segment(_images(folder), Echo())
    assert labels.keys() == plain.keys()
    for image_id, image_labels in plain.items():
        np.testing.assert_array_equal(labels[image_id], image_labels)
    # The manifest says what separated the nuclei and what that separation was tuned on.
    assert manifest["parameters"]["instance_postprocessing"] == {
        **SEPARATION,
        "outline": None,
        "tuned_on": plan["tuned_on"],
    }
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        same = SegmentationSettings.from_params(SEGMENTATION)
        _segment(_images(folder), Echo(), separation=record_tuning(SEPARATION, same))
    assert "was tuned on" not in caplog.text


def test_an_interior_separation_needs_a_model_with_a_boundary_class(folder):
    model = Echo()
    model.output_shape = (None, None, None, 2)
    interior = {**SEPARATION, "method": "interior"}
    with pytest.raises(ValueError, match="method 'interior' seeds from a boundary class"):
        segment_images(_images(folder), model, interior, PREPROCESSING, SEGMENTATION, PARAMS)
    assert model.shapes == []


def test_each_image_is_separated_with_the_settings_of_its_modality(tmp_path):
    """A separation tuned per modality: the colour test on each raw image picks its
    settings; here the stained ones drop every nucleus (a minimum size no nucleus has)."""
    nuclei = _disks((64, 80), SUB)
    stained = np.where(nuclei[..., None], [250, 150, 250], [40, 10, 40]).astype(np.uint8)
    gray = cv2.cvtColor(stained, cv2.COLOR_RGB2GRAY)  # the same nuclei, no colour
    (tmp_path / "gray.png").write_bytes(png_bytes(gray))
    (tmp_path / "stained.png").write_bytes(png_bytes(stained))
    rule = {"spread_threshold": 15.0, "brightness_threshold": 127.0}
    drop_all = {**SEPARATION, "min_size": 10**6}
    plan = {**SEPARATION, "by_modality": {"stained": drop_all}, "modality_rule": rule}
    _, labels, _, manifest = _segment(_images(tmp_path), Echo(), separation=plan)
    np.testing.assert_array_equal(labels["gray"] > 0, nuclei)
    assert labels["stained"].max() == 0
    recorded = manifest["parameters"]["instance_postprocessing"]
    assert recorded["by_modality"]["stained"]["min_size"] == 10**6
    assert recorded["modality_rule"] == rule
    # Without the stained entry both images give the nucleus.
    _, labels, _, _ = _segment(_images(tmp_path), Echo())
    assert labels["stained"].max() == 1


def test_a_model_trained_on_other_preprocessing_stops_before_any_image_is_read(folder):
    from nucleus_segmentation.imaging.preprocess import effective_preprocessing

    model = Echo()
    trained = {**PREPROCESSING, "smooth": {**PREPROCESSING["smooth"], "enabled": True}}
    model.trained_preprocessing = effective_preprocessing(trained)
    model.loaded_from = SOURCE
    with pytest.raises(ValueError, match=r"attention_unet.keras \(version v1\) was trained with"):
        segment_images(_images(folder), model, SEPARATION, PREPROCESSING, SEGMENTATION, PARAMS)
    assert model.shapes == []
    model.trained_preprocessing = effective_preprocessing(PREPROCESSING)
    assert list(
        segment_images(_images(folder), model, SEPARATION, PREPROCESSING, SEGMENTATION, PARAMS)
    )


def _catalog(images, model, output):
    return DataCatalog(
        {
            "inference_images": MemoryDataset(images, copy_mode="assign"),
            "trained_model": MemoryDataset(model, copy_mode="assign"),
            "instance_postprocessing": MemoryDataset(SEPARATION),
            "params:preprocessing": MemoryDataset(PREPROCESSING),
            "params:segmentation": MemoryDataset(SEGMENTATION),
            "params:inference": MemoryDataset(PARAMS),
            "inference_output": output,
        }
    )


def test_pipeline_writes_one_complete_folder_and_refuses_to_overwrite(folder, tmp_path):
    output = InferenceOutputDataset(path=str(tmp_path / "out"), version=Version(None, STAMP))
    SequentialRunner().run(create_pipeline(), _catalog(_images(folder), Echo(SOURCE), output))
    result = tmp_path / "out" / STAMP
    ids = ["big", "blank", "cells16", "rgba", "sub/rgba"]
    for kind, suffix in (("masks", "png"), ("labels", "tif"), ("overlays", "png")):
        assert (
            sorted(
                p.relative_to(result / kind).with_suffix("").as_posix()
                for p in (result / kind).rglob(f"*.{suffix}")
            )
            == ids
        )
    mask = cv2.imread(str(result / "masks" / "cells16.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(mask, np.where(_disks((80, 96), CELLS16), 255, 0))
    labels = cv2.imread(str(result / "labels" / "big.tif"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16 and labels.shape == (1000, 700) and labels.max() == 5
    overlay = cv2.imread(str(result / "overlays" / "sub" / "rgba.png"))[..., ::-1]
    assert overlay.shape == (64, 80, 3) and (overlay == (255, 255, 0)).all(axis=2).sum() > 20
    submission = pd.read_csv(result / "submission.csv", keep_default_na=False)
    assert submission.loc[submission["ImageId"] == "blank", "EncodedPixels"].tolist() == [""]
    assert len(submission) == 5 + 1 + 2 + 2 + 1
    assert pd.read_csv(result / "report.csv")["file"].tolist() == ["corrupt.png", "empty.jpg"]
    assert len(pd.read_csv(result / "nuclei.csv")) == 10
    manifest = json.loads((result / "manifest.json").read_text())
    assert manifest["version"] == STAMP and manifest["model"]["version"] == "v1"
    before = {p: p.read_bytes() for p in result.rglob("*") if p.is_file()}
    again = InferenceOutputDataset(path=str(tmp_path / "out"), version=Version(None, STAMP))
    with pytest.raises(DatasetError, match="already exists"):
        SequentialRunner().run(create_pipeline(), _catalog(_images(folder), Echo(), again))
    assert {p: p.read_bytes() for p in result.rglob("*") if p.is_file()} == before
    assert [p.name for p in (tmp_path / "out").iterdir()] == [STAMP]


def test_pipeline_with_a_real_model_records_its_file_and_version(folder, tmp_path):
    for name in ("big.png", "corrupt.png", "empty.jpg"):
        (folder / name).unlink()
    keras.utils.set_random_seed(0)
    config = {"base_filters": 4, "depth": 2, "aspp_rates": [1, 2], "sap_grid": [2, 2]}
    model_file = tmp_path / "models" / "tiny.keras"
    store = KerasModelDataset(filepath=str(model_file), version=Version(None, "v1"))
    store.save(build_attention_unet(UNetConfig.from_params({**config, "aspp_filters": 8})))
    trained = KerasModelDataset(filepath=str(model_file), version=Version(None, None))
    catalog = DataCatalog(
        {
            "inference_images": ImageFolderDataset(path=str(folder)),
            "trained_model": trained,
            "instance_postprocessing": MemoryDataset(SEPARATION),
            "params:preprocessing": MemoryDataset(PREPROCESSING),
            "params:segmentation": MemoryDataset(SEGMENTATION),
            "params:inference": MemoryDataset(PARAMS),
            "inference_output": InferenceOutputDataset(path=str(tmp_path / "out")),
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    (result,) = (tmp_path / "out").iterdir()
    manifest = json.loads((result / "manifest.json").read_text())
    saved = model_file / "v1" / "tiny.keras"
    assert manifest["model"]["file"] == str(saved) and manifest["model"]["version"] == "v1"
    assert manifest["model"]["sha256"] == hashlib.sha256(saved.read_bytes()).hexdigest()
    assert manifest["model"]["classes"] == 2
    assert [image["id"] for image in manifest["images"]] == ["blank", "cells16", "rgba", "sub/rgba"]
    for image in manifest["images"]:
        labels = cv2.imread(str(result / "labels" / f"{image['id']}.tif"), cv2.IMREAD_UNCHANGED)
        assert labels.shape == (image["height"], image["width"])
        assert labels.max() == image["nuclei"]
    assert manifest["version"] == result.name


@pytest.mark.filterwarnings("ignore:register_new_resolver:UserWarning")
def test_the_catalog_takes_the_folders_from_runtime_params(folder, tmp_path):
    conf = Path(__file__).resolve().parents[2] / "conf"
    runtime = {"inference_input": str(folder), "inference_output": str(tmp_path / "results")}
    loader = OmegaConfigLoader(str(conf), **CONFIG_LOADER_ARGS, runtime_params=runtime)
    catalog = DataCatalog.from_config(
        {k: v for k, v in loader["catalog"].items() if k.startswith("inference_")}
    )
    images = catalog.load("inference_images")
    assert images.path == folder and "sub/rgba" in images
    output = catalog.get("inference_output")
    assert isinstance(output, InferenceOutputDataset) and output._version is not None
    assert output._describe()["path"] == str(tmp_path / "results")
    defaults = OmegaConfigLoader(str(conf), **CONFIG_LOADER_ARGS)
    assert defaults["catalog"]["inference_images"]["path"] == "data/01_raw/inference_examples"
    params = defaults["parameters"]["segmentation"]
    assert params["scale"]["mode"] == "native" and params["scale"]["factor"] == 1.0
    assert (params["tile_size"], params["tile_overlap"]) == (1024, 64)
    assert params["tta"] == {"scales": [1.0], "flips": ["none"]}
