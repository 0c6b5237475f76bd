import numpy as np
import pandas as pd
import pytest

from nucleus_segmentation.datasets.dsb import DSBSource
from nucleus_segmentation.imaging.rle import rles_to_labels
from nucleus_segmentation.pipelines.ingestion.nodes import (
    IngestionError,
    encode_instances_as_rle,
    group_acquisitions,
    ingest_dsb_images,
    split_by_acquisition,
)
from tests.conftest import disk, write_sample

PARAMS = {
    "n_workers": 1,
    "max_overlap_fraction": 0.1,
    "modality": {"spread_threshold": 15.0, "brightness_threshold": 127.0},
}


def test_ingest_merges_masks_and_describes_each_image(dsb_folder):
    ingested, metadata, rejected = ingest_dsb_images(DSBSource(dsb_folder), PARAMS)
    assert rejected.empty
    assert metadata["image_id"].tolist() == ["fluo0", "fluo1", "fluo2", "stained0"]
    row = metadata.set_index("image_id").loc["fluo0"]
    expected_area = disk((64, 80), (20, 20), 8).sum()
    assert (row.height, row.width, row.channels, row.bit_depth) == (64, 80, 3, 8)
    assert row.modality == "fluorescence" and row.nucleus_count == 2
    assert row.mean_nucleus_area == expected_area
    assert metadata.set_index("image_id").loc["stained0", "modality"] == "stained"
    labels = ingested["fluo0/labels"]
    assert labels.dtype == np.uint16 and set(np.unique(labels)) == {0, 1, 2}
    np.testing.assert_array_equal(ingested["fluo0/mask"], (labels > 0).astype(np.uint8))
    assert ingested["fluo0/image"].shape == (64, 80, 3)  # alpha dropped


def test_bad_image_is_skipped_and_recorded_others_go_on(dsb_folder):
    shape = (64, 80)
    write_sample(dsb_folder, "badsize", np.zeros(shape, np.uint8), {"m": disk((30, 30), (9, 9), 3)})
    write_sample(
        dsb_folder,
        "overlap",
        np.zeros(shape, np.uint8),
        {"a": disk(shape, (20, 20), 8), "b": disk(shape, (20, 24), 8)},
    )
    write_sample(
        dsb_folder,
        "emptymask",
        np.zeros(shape, np.uint8),
        {"a": disk(shape, (20, 20), 8), "z": np.zeros(shape, np.uint8)},
    )
    ingested, metadata, rejected = ingest_dsb_images(DSBSource(dsb_folder), PARAMS)
    assert "badsize" not in set(metadata["image_id"]) and "overlap" not in set(metadata["image_id"])
    assert metadata.set_index("image_id").loc["emptymask", "nucleus_count"] == 1
    by_id = rejected.set_index("image_id")
    assert by_id.loc["badsize", "action"] == "image skipped"
    assert "mask is 30x30 but its image is 64x80" in by_id.loc["badsize", "problem"]
    assert by_id.loc["badsize", "file"].endswith("badsize/masks/m.png")
    assert "overlaps nucleus mask" in by_id.loc["overlap", "problem"]
    assert by_id.loc["emptymask", "action"] == "mask dropped"
    assert by_id.loc["emptymask", "file"].endswith("emptymask/masks/z.png")


def test_wholly_unusable_input_stops_with_the_problems_listed(tmp_path):
    write_sample(tmp_path, "a", b"garbage", {"m": disk((5, 5), (2, 2), 1)})
    with pytest.raises(IngestionError, match=r"none of its 1 images is usable:\n.*a.png: not a"):
        ingest_dsb_images(DSBSource(tmp_path), PARAMS)


def test_rle_table_round_trips_to_the_label_maps(dsb_folder):
    ingested, metadata, _ = ingest_dsb_images(DSBSource(dsb_folder), PARAMS)
    table = encode_instances_as_rle(ingested, metadata)
    assert list(table.columns) == ["ImageId", "EncodedPixels"]
    assert len(table) == metadata["nucleus_count"].sum()
    rows = table[table["ImageId"] == "fluo2"]["EncodedPixels"].tolist()
    np.testing.assert_array_equal(rles_to_labels(rows, (64, 80)), ingested["fluo2/labels"])


def _metadata(counts):
    rows = [(f"{modality}{i:02d}", modality) for modality, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["image_id", "modality"])


SPLIT = {
    "seed": 3,
    "stratify_by": "modality",
    "ratios": {"train": 0.6, "validation": 0.2, "test": 0.2},
    "grouping": {"enabled": False},  # every image its own group: a random split
}
GROUPING = {"enabled": True, "intensity_scale": 8.0, "area_scale": 0.25, "distance": 2.0}


def _acquisitions(sizes, gray_means, shape=(256, 256)):
    """Fluorescence metadata: acquisition ``a`` has ``sizes[a]`` tiles whose gray mean
    wobbles by under a gray level around ``gray_means[a]``."""
    rows = []
    for a, (size, mean) in enumerate(zip(sizes, gray_means, strict=True)):
        for i in range(size):
            gray = mean + 0.3 * (i % 3)
            rows.append(
                {
                    "image_id": f"acq{a}_{i:02d}",
                    "modality": "fluorescence",
                    "height": shape[0],
                    "width": shape[1],
                    "mean_nucleus_area": 150.0,
                    "gray_mean": gray,
                    "gray_std": 10.0,
                    "gray_p99": 80.0,
                    "red_mean": gray,
                    "green_mean": gray,
                    "blue_mean": gray,
                }
            )
    return pd.DataFrame(rows)


def test_acquisitions_are_grouped_and_never_straddle_two_splits():
    metadata = _acquisitions([6, 5, 4, 3, 3, 2, 2], [10, 40, 70, 100, 130, 160, 190])
    groups = group_acquisitions(metadata, GROUPING)
    expected = metadata["image_id"].str.split("_").str[0]
    # Exactly the acquisitions: same group within one, different groups across.
    assert pd.crosstab(groups, expected).gt(0).sum(axis=1).eq(1).all()
    assert groups.nunique() == 7
    split = split_by_acquisition(metadata, {**SPLIT, "grouping": GROUPING})
    assert split.groupby("group")["split"].nunique().eq(1).all()
    assert set(split["split"]) == {"train", "validation", "test"}
    # Another size is another acquisition, however alike the intensities.
    other_size = _acquisitions([2], [10], shape=(360, 360))
    both = group_acquisitions(pd.concat([metadata, other_size], ignore_index=True), GROUPING)
    assert both.iloc[-1] != both.iloc[0]


def test_an_acquisition_too_big_for_the_test_share_goes_to_training():
    metadata = _acquisitions([30, 4, 4, 4, 4, 4], [10, 40, 70, 100, 130, 160])
    for seed in range(5):
        split = split_by_acquisition(metadata, {**SPLIT, "seed": seed, "grouping": GROUPING})
        assert (split.loc[split["image_id"].str.startswith("acq0_"), "split"] == "train").all()


def test_split_is_stratified_seeded_and_covers_rare_modalities():
    metadata = _metadata({"fluorescence": 50, "stained": 10, "brightfield": 3})
    split = split_by_acquisition(metadata, SPLIT)
    table = pd.crosstab(split["modality"], split["split"])
    assert table.loc["fluorescence"].tolist() == [10, 30, 10]  # columns: test, train, validation
    assert table.loc["stained"].tolist() == [2, 6, 2]
    assert table.loc["brightfield"].tolist() == [1, 1, 1]
    pd.testing.assert_frame_equal(
        split, split_by_acquisition(metadata.sample(frac=1, random_state=1), SPLIT)
    )
    other = split_by_acquisition(metadata, {**SPLIT, "seed": 4})
    assert not other["split"].equals(split["split"])


def test_split_ratios_are_validated():
    with pytest.raises(ValueError, match="must sum to 1"):
        split_by_acquisition(
            _metadata({"x": 4}), {**SPLIT, "ratios": {"train": 0.9, "validation": 0.2, "test": 0.2}}
        )


def test_a_held_out_acquisition_is_the_whole_test_split():
    metadata = _acquisitions([6, 5, 4, 3, 3, 2, 2], [10, 40, 70, 100, 130, 160, 190])
    groups = group_acquisitions(metadata, GROUPING)
    target = groups.iloc[0]  # acquisition 0, the largest
    split = split_by_acquisition(metadata, {**SPLIT, "grouping": GROUPING, "hold_out": target})
    test = split.loc[split["split"] == "test"]
    assert set(test["group"]) == {target}
    assert len(test) == 6
    assert set(split.loc[split["split"] != "test", "split"]) == {"train", "validation"}
    with pytest.raises(ValueError, match=r"no acquisition group \['nope'\]; the largest are"):
        split_by_acquisition(metadata, {**SPLIT, "grouping": GROUPING, "hold_out": "nope"})
