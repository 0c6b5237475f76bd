"""The per-image stages on a 2-worker Dask LocalCluster (loopback) give byte-identical
outputs to the single-machine run: data stages and inference, through `kedro run`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from nucleus_segmentation.datasets.npz import NpzDataset
from tests.project import EXAMPLES, TINY, cli, succeeded

pytestmark = pytest.mark.slow
DASK = "parallel.backend=dask,parallel.dask.n_workers=2"


def _two_latest(root: Path, relative: str) -> list[Path]:
    folder = root / relative
    return [version / folder.name for version in sorted(folder.iterdir())[-2:]]


def _arrays(path: Path) -> dict[str, bytes]:
    bundle = NpzDataset(filepath=str(path)).load()
    return {key: np.asarray(bundle[key]).tobytes() for key in bundle}


def _files(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def test_data_stages_and_inference_on_a_dask_cluster_match_the_local_run(trained_sample, tmp_path):
    project = trained_sample.root  # its data stages ran on this machine's processes
    result = cli(project, "run", "--pipeline", "data_processing", "--params", f"{TINY},{DASK}")
    succeeded(result)
    assert "Per-image work on Dask" in result.stdout + result.stderr
    for name in (
        "data/02_intermediate/ingested_images.npz",
        "data/04_feature/preprocessed_images.npz",
        "data/05_model_input/augmented_images.npz",
    ):
        here, cluster = _two_latest(project, name)
        assert _arrays(here) == _arrays(cluster), name
    for name in ("data/02_intermediate/image_metadata.csv", "data/03_primary/data_split.csv"):
        here, cluster = _two_latest(project, name)
        assert here.read_bytes() == cluster.read_bytes(), name

    # The session's model, segmenting the same folder in this process and on the cluster.
    outputs = {}
    for name, extra in (("here", ""), ("cluster", f",{DASK}")):
        params = f"inference_input={project / EXAMPLES},inference_output={tmp_path / name}{extra}"
        succeeded(cli(project, "run", "--pipeline", "inference", "--params", params))
        (outputs[name],) = (tmp_path / name).iterdir()
    here, cluster = (_files(outputs[k]) for k in ("here", "cluster"))
    assert len(here) == 3 * 3 + 3  # masks, labels, overlays of 3 images; 3 tables
    assert here == cluster
