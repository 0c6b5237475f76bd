"""Runnable copies of the project for the end-to-end tests, and `kedro` as a user types it.

Every copy lives under pytest's tmp_path with MLflow tracking into a SQLite file there, so
no test writes outside tmp_path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
SAMPLE = Path("data/01_raw/dsb2018_sample")
EXAMPLES = Path("data/01_raw/inference_examples")
# `kedro run` on the sample, shrunk to a few training steps of a narrow network.
TINY_TRAINING = (
    "training.epochs=2,training.steps_per_epoch=2,training.max_validation_images=2,"
    "training.model.base_filters=4"
)
TINY = f"augmentation.copies_per_image=1,{TINY_TRAINING}"


def base_training_parameters(base_filters: int | None = None) -> dict:
    """The ``training`` group of conf/base as a plain dict; ``base_filters`` narrows the
    network (ASPP width 2x it) for tests that build it."""
    text = (PROJECT / "conf/base/parameters_training.yml").read_text()
    params = yaml.safe_load(text)["training"]
    if base_filters is not None:
        model = {**params["model"], "base_filters": base_filters, "aspp_filters": 2 * base_filters}
        params = {**params, "model": model}
    return params


def copy_project(root: Path) -> Path:
    """A runnable copy of the project at ``root``: conf (no local), the embedded sample and
    inference examples, notebooks; the package is imported from the installed project."""
    shutil.copytree(PROJECT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "src").mkdir()
    for folder in (SAMPLE, EXAMPLES, Path("notebooks")):
        shutil.copytree(PROJECT / folder, root / folder)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT / name, root / name)
    return root


def cli(
    root: Path, *args: str, timeout: int = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``kedro <args>`` in ``root`` as a user types it, tracking into ``root/mlflow.db``."""
    environment = {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
        "COLUMNS": "200",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "kedro", *args],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def succeeded(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@dataclass(frozen=True)
class TrainedSample:
    """A project copy after a tiny `kedro run` (attention U-Net: data processing, training,
    evaluation) and a tiny `--env baseline` training; ``log`` is the first run's output."""

    root: Path
    log: str
