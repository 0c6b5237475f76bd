"""Shared fixtures: tiny synthetic DSB-layout data with exactly known content."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")


def disk(shape: tuple[int, int], center: tuple[int, int], radius: int) -> np.ndarray:
    """HxW uint8 {0, 1} disk."""
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (((rows - center[0]) ** 2 + (cols - center[1]) ** 2) <= radius**2).astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    """RGB(A)/gray array -> PNG bytes (the channel order the files use)."""
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
    ok, buffer = cv2.imencode(".png", array)
    assert ok
    return buffer.tobytes()


def fluorescence_image(shape=(64, 80), centers=((20, 20), (40, 55)), radius=8) -> np.ndarray:
    """RGBA uint8: bright gray disks on black, alpha 255 (the DSB PNG layout)."""
    gray = np.zeros(shape, dtype=np.uint8) + 10
    for center in centers:
        gray[disk(shape, center, radius) > 0] = 200
    return np.dstack([gray, gray, gray, np.full(shape, 255, np.uint8)])


def write_sample(
    root: Path,
    image_id: str,
    image: np.ndarray | bytes | None,
    masks: dict[str, np.ndarray | bytes],
) -> None:
    """Write one DSB sample folder: ``image`` None makes an empty images/ folder."""
    (root / image_id / "images").mkdir(parents=True, exist_ok=True)
    (root / image_id / "masks").mkdir(parents=True, exist_ok=True)
    if image is not None:
        data = image if isinstance(image, bytes) else png_bytes(image)
        (root / image_id / "images" / f"{image_id}.png").write_bytes(data)
    for name, mask in masks.items():
        data = mask if isinstance(mask, bytes) else png_bytes(mask * 255)
        (root / image_id / "masks" / f"{name}.png").write_bytes(data)


def good_sample(root: Path, image_id: str, shape=(64, 80), centers=((20, 20), (40, 55))) -> None:
    masks = {f"m{i}": disk(shape, c, 8) for i, c in enumerate(centers)}
    write_sample(root, image_id, fluorescence_image(shape, centers), masks)


def zip_folder(folder: Path, target: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, prefix + path.relative_to(folder).as_posix())
    return target


@pytest.fixture
def dsb_folder(tmp_path: Path) -> Path:
    """Four good images: three fluorescence (two disks each) and one stained (RGB purple)."""
    root = tmp_path / "stage1_train"
    for index in range(3):
        good_sample(root, f"fluo{index}")
    shape = (64, 80)
    stained = np.zeros(shape + (3,), np.uint8)
    stained[...] = (230, 200, 230)
    nucleus = disk(shape, (30, 30), 10)
    stained[nucleus > 0] = (120, 40, 140)
    write_sample(root, "stained0", stained, {"n0": nucleus})
    return root


@pytest.fixture(scope="session")
def trained_sample(tmp_path_factory):
    """One tiny trained project for the end-to-end tests that need a model and MLflow runs
    (tests/test_run.py, test_dask.py, test_users_view.py); built once per session."""
    from tests.project import TINY, TINY_TRAINING, TrainedSample, cli, copy_project, succeeded

    root = copy_project(tmp_path_factory.mktemp("trained") / "project")
    first = cli(root, "run", "--params", TINY)
    succeeded(first)
    succeeded(
        cli(root, "run", "--pipeline", "training", "--env", "baseline", "--params", TINY_TRAINING)
    )
    return TrainedSample(root, first.stdout + first.stderr)
