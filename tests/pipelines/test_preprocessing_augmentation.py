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


def _jitter_inputs():
    ingested, metadata = _ingested()
    split = pd.DataFrame(
        {
            "image_id": metadata["image_id"],
            "split": ["train", "train", "train", "test"],
            "modality": ["stained", "fluorescence", "stained", "stained"],
        }
    )
    return ingested, split, preprocess_images(ingested, metadata, PRE, FIXED)


def test_stain_jitter_changes_only_the_colours_of_stained_training_copies():
    ingested, split, preprocessed = _jitter_inputs()
    on = {**AUG, "stain_jitter": {"enabled": True, "gain_range": [0.5, 1.5]}}
    plain = augment_training_images(preprocessed, split, AUG)
    jittered = augment_training_images(preprocessed, split, on, ingested, PRE, FIXED)
    assert list(plain) == list(jittered)
    for image_id in bundle.sample_ids(plain):
        # The geometry of every copy is the one it has without jitter.
        np.testing.assert_array_equal(plain[f"{image_id}/labels"], jittered[f"{image_id}/labels"])
        same = np.array_equal(plain[f"{image_id}/image"], jittered[f"{image_id}/image"])
        assert same == image_id.startswith("img1_"), image_id  # img1 is fluorescence
    # Same seed, same copies, whatever the workers; the jitter comes from the seed.
    again = augment_training_images(
        preprocessed, split, {**on, "n_workers": 2}, ingested, PRE, FIXED
    )
    assert all(jittered[k].tobytes() == again[k].tobytes() for k in jittered)
    # Jitter that changes nothing gives the preprocessing stage's own images back.
    identity = {
        **AUG,
        "stain_jitter": {"enabled": True, "gain_range": [1, 1], "shift_range": [0, 0]},
    }
    unchanged = augment_training_images(preprocessed, split, identity, ingested, PRE, FIXED)
    assert all(unchanged[k].tobytes() == plain[k].tobytes() for k in plain)


def test_stain_jitter_names_what_it_lacks():
    from nucleus_segmentation.errors import DataProblem, ParameterError

    ingested, split, preprocessed = _jitter_inputs()
    on = {**AUG, "stain_jitter": {"enabled": True}}
    with pytest.raises(ParameterError, match="needs the ingested images, the preprocessing"):
        augment_training_images(preprocessed, split, on)
    with pytest.raises(ParameterError, match="needs the ingested images, the preprocessing"):
        augment_training_images(preprocessed, split, on, ingested, PRE)
    gray = dict(ingested)
    gray["img2/image"] = ingested["img2/image"][..., 0]
    with pytest.raises(DataProblem, match=r"img2 \(modality stained\) is not a colour image"):
        augment_training_images(preprocessed, split, on, gray, PRE, FIXED)


def test_copies_per_modality_oversamples_the_named_modalities_only():
    _, split, preprocessed = _jitter_inputs()  # train: img0, img2 stained, img1 fluorescence
    plain = augment_training_images(preprocessed, split, AUG)
    more = augment_training_images(
        preprocessed, split, {**AUG, "copies_per_modality": {"stained": 5, "brightfield": 9}}
    )
    ids = bundle.sample_ids(more)
    counts = pd.Series([i.rsplit("_aug", 1)[0] for i in ids]).value_counts().to_dict()
    assert counts == {"img0": 5, "img2": 5, "img1": 3}
    # The first copies of an oversampled image are the ones it gets without oversampling.
    assert all(more[k].tobytes() == plain[k].tobytes() for k in plain)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"stained": 0}, r"copies_per_modality.stained must be a whole number >= 1, got 0"),
        ({"stained": 2.5}, r"copies_per_modality.stained must be a whole number >= 1, got 2.5"),
    ],
)
def test_copies_per_modality_refuses_bad_counts(setting, message):
    from nucleus_segmentation.errors import ParameterError

    _, split, preprocessed = _jitter_inputs()
    with pytest.raises(ParameterError, match=message):
        augment_training_images(preprocessed, split, {**AUG, "copies_per_modality": setting})
    with pytest.raises(ParameterError, match="needs a data split with a modality column"):
        augment_training_images(
            preprocessed, split.drop(columns="modality"), {**AUG, "copies_per_modality": {"a": 2}}
        )


def _disk_grid(radius: int, spacing: int, side: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A bright-on-dark image of a grid of disks and its label map."""
    yy, xx = np.mgrid[0:side, 0:side]
    labels = np.zeros((side, side), np.uint16)
    centres = range(spacing // 2, side - radius, spacing)
    for index, (cy, cx) in enumerate((y, x) for y in centres for x in centres):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = index + 1
    image = np.where(labels > 0, 200, 30).astype(np.uint8)
    return np.dstack([image] * 3), labels


def _size_inputs():
    """img_small: nuclei of ~29 px (inference enlarges it 2x, the factor_range's limit);
    img_band: nuclei of ~450 px (inside nucleus_area: left alone); img_test: not training."""
    images = {
        "img_small": _disk_grid(3, 8),
        "img_band": _disk_grid(12, 30),
        "img_test": _disk_grid(3, 8),
    }
    ingested = bundle.pack((i, {"image": im, "labels": lab}) for i, (im, lab) in images.items())
    metadata = pd.DataFrame({"image_id": list(images)})
    split = metadata.assign(split=["train", "train", "test"])
    return ingested, split, preprocess_images(ingested, metadata, PRE, NATIVE)


SIZE_AUG = {
    **AUG,
    "transforms": {
        "output_size": 32,
        "zoom_range": [1.0, 1.0],
        "flip": False,
        "gray_perturbation": False,
        "shape_perturbation": False,
        "elastic": False,
    },
}


def _largest_nucleus(out, prefix: str) -> list[int]:
    return [
        int(np.bincount(out[f"{i}/labels"].ravel())[1:].max())
        for i in bundle.sample_ids(out)
        if i.startswith(prefix)
    ]


def test_adapt_nucleus_size_trains_on_the_scale_inference_predicts_at():
    ingested, split, preprocessed = _size_inputs()
    plain = augment_training_images(preprocessed, split, SIZE_AUG, ingested, PRE, NATIVE)
    on = {**SIZE_AUG, "adapt_nucleus_size": True}
    adapted = augment_training_images(preprocessed, split, on, ingested, PRE, NATIVE)
    assert list(plain) == list(adapted)
    # Small nuclei come twice as wide: a whole one covers about 4x the pixels (29 -> ~113).
    before, after = _largest_nucleus(plain, "img_small"), _largest_nucleus(adapted, "img_small")
    assert max(before) == 29
    assert all(100 <= area <= 130 for area in after), after
    # Nuclei inside the band: the very copies made without adaptation.
    band = [k for k in plain if k.startswith("img_band")]
    assert band and all(plain[k].tobytes() == adapted[k].tobytes() for k in band)
    # Same seed, same copies, whatever the workers.
    again = augment_training_images(
        preprocessed, split, {**on, "n_workers": 2}, ingested, PRE, NATIVE
    )
    assert all(adapted[k].tobytes() == again[k].tobytes() for k in adapted)


@pytest.mark.parametrize(
    ("value", "inputs", "message"),
    [
        ("yes", "all", r"adapt_nucleus_size must be true or false, got 'yes'"),
        (True, "none", r"adapt_nucleus_size needs the ingested images and the preprocessing"),
        (True, "fixed", r"needs segmentation.scale.mode native with a nucleus_area band \(got "),
    ],
)
def test_adapt_nucleus_size_refuses_what_cannot_work(value, inputs, message):
    from nucleus_segmentation.errors import ParameterError

    ingested, split, preprocessed = _size_inputs()
    extra = {"all": (ingested, PRE, NATIVE), "none": (), "fixed": (ingested, PRE, FIXED)}
    params = {**SIZE_AUG, "adapt_nucleus_size": value}
    with pytest.raises(ParameterError, match=message):
        augment_training_images(preprocessed, split, params, *extra[inputs])
