"""The project as a person meets it, on the embedded sample: the DAG in kedro-viz and the runs
in the MLflow UI (both in headless Chromium), the exploration notebook, and rerunning only
the stages whose data changed.

The session's tiny trained sample (a `kedro run` and an `--env baseline` training) feeds
every test; the rerun test adds data versions, so it runs last and counts from what it finds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from tests.browser import browser_page, free_port, serve_folder, server_process, wait_for_url
from tests.project import SAMPLE, TINY, TINY_TRAINING, cli, succeeded

pytestmark = pytest.mark.slow
STAGES = (
    "ingestion",
    "preprocessing",
    "augmentation",
    "training",
    "evaluation",
    "inference",
    "calibration",
)
# kedro-viz remembers its settings in localStorage: skip the feature tour on a fresh profile.
VIZ_SETTINGS = "localStorage.setItem('KedroViz', JSON.stringify({showFeatureHints: false}))"


@pytest.fixture(scope="module")
def sample_project(trained_sample) -> Path:
    return trained_sample.root


def _registered_pipelines(root: Path) -> dict:
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(root)
    return {
        name: ({n.name for n in p.nodes}, set().union(*(n.tags for n in p.nodes)))
        for name, p in pipelines.items()
    }


def test_kedro_viz_draws_every_pipeline_with_stage_tags_layers_and_previews(sample_project):
    succeeded(cli(sample_project, "viz", "build", "--include-previews"))
    build = sample_project / "build"
    main = json.loads((build / "api" / "main").read_text())
    assert {t["id"] for t in main["tags"]} == set(STAGES)
    assert main["layers"][0] == "raw" and "model_input" in main["layers"]
    # A report table carries its preview (first rows) into the static site.
    (table,) = [n for n in main["nodes"] if n["name"] == "evaluation_per_modality_table"]
    preview = json.loads((build / "api" / "nodes" / table["id"]).read_text())["preview"]
    assert "all" in json.dumps(preview)

    expected = _registered_pipelines(sample_project)
    assert set(STAGES) | {"data_processing", "__default__"} <= set(expected)
    with serve_folder(build) as url, browser_page(init_script=VIZ_SETTINGS) as page:
        for name, (nodes, tags) in expected.items():
            page.goto(f"{url}/?pid={name}")
            page.wait_for_selector("g.pipeline-node text", timeout=30_000)
            labels = "e => e.map(x => x.textContent)"
            drawn = set(page.eval_on_selector_all("g.pipeline-node text", labels))
            assert nodes <= drawn, (name, sorted(nodes - drawn))
            sidebar = page.inner_text("body").lower()
            assert all(tag in sidebar for tag in tags), (name, tags)  # the tag filter


def _api(base: str, path: str, body: dict | None = None) -> dict:
    """MLflow's REST API: POST ``body`` as JSON, or GET when there is none."""
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_mlflow_ui_lists_named_runs_with_their_data_and_compares_the_two_models(sample_project):
    import os

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    store = f"sqlite:///{sample_project / 'mlflow.db'}"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = sample_project / "mlflow_server.log"
    with server_process(command, sample_project, dict(os.environ), log):
        wait_for_url(f"{base}/health")
        experiments = _api(base, "experiments/search", {"max_results": 10})["experiments"]
        (experiment,) = [e for e in experiments if e["name"] == "nucleus_segmentation"]
        tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        runs = _api(base, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        by_name = {r["info"]["run_name"]: r for r in runs}
        attention = by_name["__default__ attention_unet dsb2018_sample"]
        plain = by_name["training unet_baseline dsb2018_sample"]
        metrics = [{m["key"] for m in r["data"]["metrics"]} for r in (attention, plain)]
        shared = {"best.val_miou_pooled", "best.val_dsb_score", "best.val_nucleus_iou_pooled"}
        assert shared <= metrics[0] & metrics[1]  # the same names: comparable side by side
        assert {"data_split", "augmented_images"} <= {
            i["dataset"]["name"] for i in plain["inputs"]["dataset_inputs"]
        }
        plain_tags = {t["key"]: t["value"] for t in plain["data"]["tags"]}
        assert plain_tags["kedro_env"] == "baseline" and plain_tags["data"] == "dsb2018_sample"
        params = {p["key"] for p in plain["data"]["params"]}
        assert "preprocessing.equalize.method" in params  # the data's recipe, with the model
        models = _api(base, "registered-models/search")["registered_models"]
        assert {"attention_unet", "unet_baseline"} <= {m["name"] for m in models}

        experiment_url = f"{base}/#/experiments/{experiment['experiment_id']}"
        ids = [attention["info"]["run_id"], plain["info"]["run_id"]]
        with browser_page(1500, 900) as page:
            page.goto(f"{experiment_url}/runs?workflowType=machine_learning")
            page.wait_for_selector("text=training unet_baseline dsb2018_sample", timeout=60_000)
            assert "augmented_images" in page.inner_text("body")  # the Dataset column
            experiments = json.dumps([experiment["experiment_id"]])
            page.goto(f"{base}/#/compare-runs?runs={json.dumps(ids)}&experiments={experiments}")
            page.wait_for_selector("text=best.val_dsb_score", timeout=60_000)
            text = page.inner_text("body")
            assert "training unet_baseline dsb2018_sample" in text
            assert "__default__ attention_unet dsb2018_sample" in text


def test_the_exploration_notebook_runs_on_the_sample(sample_project, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    committed = nbformat.read(sample_project / "notebooks" / "exploration.ipynb", as_version=4)
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)  # stripped in git
    monkeypatch.delenv("MPLBACKEND", raising=False)  # inline figures, as in Jupyter
    client = NotebookClient(
        committed,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(sample_project / "notebooks")}},
    )
    client.execute()
    outputs = [o for c in committed.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 4  # masks, preprocessing steps, augmentations, predictions


def _versions(root: Path, relative: str) -> list[Path]:
    return sorted((root / relative).iterdir())


def _digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def test_rerunning_only_the_stages_whose_data_changed(sample_project):
    import mlflow

    root = sample_project
    split_dir, pre_dir = "data/03_primary/data_split.csv", "data/04_feature/preprocessed_images.npz"
    old_split, old_pre = _versions(root, split_dir)[-1], _versions(root, pre_dir)[-1]
    splits, pres = len(_versions(root, split_dir)), len(_versions(root, pre_dir))
    before = {p: _digest(p) for p in (old_split, old_pre)}

    # New raw data: the sample plus one more image folder.
    raw = root / "raw_v2"
    shutil.copytree(root / SAMPLE, raw)
    source = sorted(raw.iterdir())[0]
    added = raw / ("f" * 64)
    shutil.copytree(source, added)
    (added / "images" / f"{source.name}.png").rename(added / "images" / f"{added.name}.png")
    succeeded(
        cli(root, "run", "--pipeline", "data_processing", "--params", f"raw_data={raw},{TINY}")
    )
    new_split = _versions(root, split_dir)[-1]
    assert len(pd.read_csv(new_split / "data_split.csv")) == 31

    # One stage again, by its tag, after a parameter change: a new version beside the old.
    rerun = cli(
        root, "run", "--tags", "preprocessing", "--params", "preprocessing.smooth.sigma=2.0"
    )
    succeeded(rerun)
    assert "Running node: preprocess_images" in rerun.stdout + rerun.stderr
    assert "Running node: ingest_dsb_images" not in rerun.stdout + rerun.stderr
    newest_pre = _versions(root, pre_dir)[-1]
    assert (
        len(_versions(root, pre_dir)) == pres + 2 and len(_versions(root, split_dir)) == splits + 1
    )

    # Training takes the newest versions, and says so in MLflow.
    succeeded(cli(root, "run", "--pipeline", "training", "--params", TINY_TRAINING))
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    (run,) = mlflow.search_runs(
        experiment_names=["nucleus_segmentation"],
        filter_string="tags.kedro_pipeline = 'training' and tags.kedro_env = 'local'",
        output_format="list",
    )
    assert run.data.tags["input.data_split.version"] == new_split.name
    assert run.data.tags["input.preprocessed_images.version"] == newest_pre.name

    # The old versions are intact, and a stage still runs on them when pinned.
    assert {p: _digest(p) for p in (old_split, old_pre)} == before
    pins = f"preprocessed_images:{old_pre.name},data_split:{old_split.name}"
    succeeded(cli(root, "run", "--pipeline", "augmentation", "--load-versions", pins))
    old_train = (pd.read_csv(old_split / "data_split.csv")["split"] == "train").sum()
    from nucleus_segmentation import bundle
    from nucleus_segmentation.datasets.npz import NpzDataset

    augmented = _versions(root, "data/05_model_input/augmented_images.npz")[-1]
    samples = NpzDataset(filepath=str(augmented / "augmented_images.npz")).load()
    copies = 8  # conf/base: augmentation.copies_per_image
    assert len(bundle.sample_ids(samples)) == copies * old_train
