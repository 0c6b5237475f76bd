"""The data stages chained through Kedro's SequentialRunner on an in-memory catalog."""

import numpy as np
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from nucleus_segmentation import bundle
from nucleus_segmentation.datasets.dsb import DSBStage1Dataset
from nucleus_segmentation.pipelines.data_processing import create_pipeline


class KeptDataset(MemoryDataset):
    """A MemoryDataset the runner does not release, so the test can inspect every stage."""

    def _release(self) -> None:
        pass


PARAMS = {
    "ingestion": {
        "n_workers": 1,
        "max_overlap_fraction": 0.1,
        "modality": {"spread_threshold": 15.0, "brightness_threshold": 127.0},
    },
    "split": {
        "seed": 1,
        "stratify_by": "modality",
        "ratios": {"train": 0.5, "validation": 0.25, "test": 0.25},
        "grouping": {"enabled": False},
    },
    "segmentation": {"scale": {"mode": "fixed", "size": [32, 32]}},
    "preprocessing": {
        "invert": {"enabled": True, "brightness_threshold": 127.0},
        "equalize": {"enabled": True, "method": "clahe", "clip_limit": 2.0, "tile_grid": 4},
        "smooth": {"enabled": True, "kernel_size": 3, "sigma": 0.8},
    },
    "augmentation": {
        "seed": 2,
        "copies_per_image": 2,
        "n_workers": 1,
        "transforms": {"output_size": 16},
    },
}


def test_data_processing_runs_end_to_end(dsb_folder):
    datasets = {"dsb_raw": DSBStage1Dataset(path=str(dsb_folder))}
    datasets |= {f"params:{name}": MemoryDataset(value) for name, value in PARAMS.items()}
    for name in (
        "ingested_images",
        "image_metadata",
        "rejected_items",
        "instance_labels_rle",
        "data_split",
        "preprocessed_images",
        "augmented_images",
    ):
        datasets[name] = KeptDataset()
    catalog = DataCatalog(datasets=datasets)
    SequentialRunner().run(create_pipeline(), catalog)
    split = catalog.load("data_split")
    train = set(split.loc[split["split"] == "train", "image_id"])
    augmented = catalog.load("augmented_images")
    ids = bundle.sample_ids(augmented)
    assert len(ids) == 2 * len(train)
    assert {i.rsplit("_aug", 1)[0] for i in ids} == train
    assert all(augmented[f"{i}/image"].shape == (16, 16) for i in ids)
    preprocessed = catalog.load("preprocessed_images")
    assert len(bundle.sample_ids(preprocessed)) == 4
    assert catalog.load("instance_labels_rle")["ImageId"].value_counts().to_dict() == {
        "fluo0": 2,
        "fluo1": 2,
        "fluo2": 2,
        "stained0": 1,
    }
    assert np.unique(preprocessed["stained0/labels"]).tolist() == [0, 1]
