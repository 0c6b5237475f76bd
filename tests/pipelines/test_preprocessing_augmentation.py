import numpy as np
import pandas as pd
import pytest

from nucleus_segmentation import bundle
from nucleus_segmentation.pipelines.augmentation.nodes import augment_training_images
from nucleus_segmentation.pipelines.preprocessing.nodes import preprocess_images

PRE = {
    "invert": {"enabled": True, "brightness_threshold": 127.0},
    "equalize": {"enabled": True, "method": "global", "clip_limit": 2.0, "tile_grid": 8},
    "smooth": {"enabled": False, "kernel_size": 5, "sigma": 1.0},
}
FIXED = {"scale": {"mode": "fixed", "size": [48, 48]}}
NATIVE = {"scale": {"mode": "native"}}
AUG = {
    "seed": 11,
    "copies_per_image": 3,
    "n_workers": 1,
    "transforms": {"output_size": 24, "crop_scale": [0.5, 0.8]},
}


def _ingested():
    rng = np.random.default_rng(0)
    samples, rows = [], []
    for index in range(4):
        image = rng.integers(0, 256, (40 + index, 60, 3), dtype=np.uint8)
        labels = np.zeros(image.shape[:2], np.uint16)
        labels[5:15, 5:15], labels[20:30, 30:50] = 1, 2
        samples.append((f"img{index}", {"image": image, "labels": labels}))
        rows.append(f"img{index}")
    return bundle.pack(samples), pd.DataFrame({"image_id": rows})


def test_preprocess_follows_the_scale_policy_for_images_and_labels_together():
    ingested, metadata = _ingested()
    native = preprocess_images(ingested, metadata, PRE, NATIVE)
    for image_id in metadata["image_id"]:
        assert native[f"{image_id}/image"].shape == ingested[f"{image_id}/image"].shape[:2]
        np.testing.assert_array_equal(native[f"{image_id}/labels"], ingested[f"{image_id}/labels"])
    out = preprocess_images(ingested, metadata, PRE, FIXED)
    assert bundle.sample_ids(out) == metadata["image_id"].tolist()
    for image_id in bundle.sample_ids(out):
        sample = bundle.get_sample(out, image_id)
        assert sample["image"].shape == sample["labels"].shape == (48, 48)
        assert sample["image"].dtype == np.uint8 and sample["labels"].dtype == np.uint16
        assert set(np.unique(sample["labels"])) == {0, 1, 2}
        np.testing.assert_array_equal(sample["mask"], sample["labels"] > 0)


@pytest.fixture
def preprocessed_and_split():
    ingested, metadata = _ingested()
    split = pd.DataFrame(
        {"image_id": metadata["image_id"], "split": ["train", "validation", "train", "test"]}
    )
    return preprocess_images(ingested, metadata, PRE, FIXED), split


def test_augmentation_uses_only_training_images(preprocessed_and_split):
    preprocessed, split = preprocessed_and_split
    out = augment_training_images(preprocessed, split, AUG)
    ids = bundle.sample_ids(out)
    assert len(ids) == 2 * 3
    assert {i.rsplit("_aug", 1)[0] for i in ids} == {"img0", "img2"}
    assert out[f"{ids[0]}/image"].shape == (24, 24)


def test_augmentation_is_byte_identical_for_a_seed_whatever_the_workers(preprocessed_and_split):
    preprocessed, split = preprocessed_and_split
    first = augment_training_images(preprocessed, split, AUG)
    parallel = augment_training_images(preprocessed, split, {**AUG, "n_workers": 2})
    assert list(first) == list(parallel)
    for key in first:
        assert first[key].tobytes() == parallel[key].tobytes()
    other = augment_training_images(preprocessed, split, {**AUG, "seed": 12})
    assert any(first[k].tobytes() != other[k].tobytes() for k in first if k in other)
