"""Custom Kedro datasets, only where kedro-datasets has no type that fits (see docs/data.md)."""

from nucleus_segmentation.datasets.dsb import DSBSource, DSBStage1Dataset
from nucleus_segmentation.datasets.image_folder import ImageFolder, ImageFolderDataset
from nucleus_segmentation.datasets.inference_output import InferenceOutputDataset
from nucleus_segmentation.datasets.keras_model import KerasModelDataset, ModelSource
from nucleus_segmentation.datasets.npz import NpzDataset

__all__ = [
    "DSBSource",
    "DSBStage1Dataset",
    "ImageFolder",
    "ImageFolderDataset",
    "InferenceOutputDataset",
    "KerasModelDataset",
    "ModelSource",
    "NpzDataset",
]
